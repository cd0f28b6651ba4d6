import Foundation
import Testing

@testable import MountConfig

/// What the check catches that used to pass and fail only at run time, and what it only warns
/// about (issue 10, item 10).
@Suite struct CertainFailures {
  private func mount(_ name: String, at mountpoint: String? = nil, command: String) -> String {
    """
    [mounts.\(name)]
    mountpoint = \(tomlQuoted(mountpoint ?? "/mnt/\(name)"))
    command = [\(tomlQuoted(command)), "{mountpoint}"]

    """
  }

  /// A directory with an executable `tool`, a non-executable `data` and a directory `dir`.
  private func withTools(_ body: (String) throws -> Void) throws {
    try withTemporaryDirectory { directory in
      try write("#!/bin/sh\n", to: "bin/tool", in: directory)
      chmod(directory + "/bin/tool", 0o755)
      try write("not a program\n", to: "bin/data", in: directory)
      chmod(directory + "/bin/data", 0o644)
      try FileManager.default.createDirectory(
        atPath: directory + "/bin/dir", withIntermediateDirectories: true)
      try body(directory)
    }
  }

  @Test func aMissingCommandIsAnErrorInTheCheckAndAWarningAtStart() throws {
    try withTools { directory in
      let lookup = CommandLookup(searchPath: [directory + "/bin", directory + "/nothing"])
      let toml = mount("photos", command: "no-such-worker")
      let check = LoadOptions(missingCommandsAreErrors: true, commandLookup: lookup)
      expectConfigError(
        in: mainFile, code: .commandNotFound, mount: "photos", key: "command",
        mentions: [
          "command[0] \"no-such-worker\" is not found on mountsupd's search path",
          "\(directory)/bin:\(directory)/nothing)",
          "install it or give its absolute path",
        ]
      ) { () throws(InvalidConfiguration) in
        try ConfigLoader.parse(toml: toml, file: mainFile, options: check)
      }

      let configuration = try ConfigLoader.parse(
        toml: toml, file: mainFile, options: LoadOptions(commandLookup: lookup))
      #expect(configuration.mounts.map(\.name) == ["photos"], "start and reload go on")
      let warning = try #require(configuration.warnings.first)
      #expect(warning.file == mainFile && warning.mount == "photos" && warning.key == "command")
      #expect(warning.description.contains("is not found"), "\(warning)")
      #expect(warning.description.contains("will fail to start unless"), "\(warning)")
    }
  }

  @Test func commandsFoundOnTheSearchPathOrByPathPass() throws {
    try withTools { directory in
      let check = LoadOptions(
        missingCommandsAreErrors: true,
        commandLookup: CommandLookup(searchPath: ["", directory + "/none", directory + "/bin"]))
      let configuration = try ConfigLoader.parse(
        toml: mount("a", command: "tool") + mount("b", command: directory + "/bin/tool"),
        file: mainFile, options: check)
      #expect(configuration.warnings.isEmpty, "\(configuration.warnings)")
      #expect(check.commandLookup.resolve("tool") == .success(directory + "/bin/tool"))
    }
  }

  @Test func notExecutableAndDirectoriesAreErrors() throws {
    try withTools { directory in
      let check = LoadOptions(
        missingCommandsAreErrors: true,
        commandLookup: CommandLookup(searchPath: [directory + "/bin"]))
      for (command, mention) in [
        (directory + "/bin/data", "is not executable (mode 0644)"),
        (directory + "/bin/dir", "is not executable (it is a directory)"),
        (directory + "/bin/gone", "\"\(directory)/bin/gone\" does not exist"),
        ("data", "\"\(directory)/bin/data\" is not executable (mode 0644)"),
      ] {
        expectConfigError(
          in: mainFile, code: .commandNotFound, mount: "x", key: "command", mentions: [mention]
        ) { () throws(InvalidConfiguration) in
          try ConfigLoader.parse(toml: mount("x", command: command), file: mainFile, options: check)
        }
      }
    }
  }

  @Test func aProgramInsideAnotherConfiguredMountIsNotLookedAt() throws {
    // The program lies in the mount "tools", which is not mounted yet: what will be there is
    // unknown until then.
    let check = LoadOptions(
      missingCommandsAreErrors: true, commandLookup: CommandLookup(searchPath: []))
    let configuration = try ConfigLoader.parse(
      toml: mount("tools", command: "/bin/sh") + mount("user", command: "/mnt/tools/bin/worker"),
      file: mainFile, options: check)
    #expect(configuration.mounts.count == 2 && configuration.warnings.isEmpty)
  }

  @Test func aProgramInsideAFUSEMountIsNotLookedAt() throws {
    try withTools { directory in
      // bin stands in for a FUSE mount: looked at, data would be "not executable".
      let context = LoadContext(
        resolver: MountpointResolver(fuseMountpoints: [directory + "/bin"]),
        options: LoadOptions(
          missingCommandsAreErrors: true,
          commandLookup: CommandLookup(searchPath: [directory + "/bin"])))
      for command in [directory + "/bin/data", "data"] {
        let configuration = try ConfigLoader.parse(
          toml: mount("x", command: command), file: mainFile, baseDirectory: nil,
          context: context)
        #expect(configuration.warnings.isEmpty, "\(command): \(configuration.warnings)")
      }
      #expect(isAtOrInside("/a/b/c", anyOf: ["/a/b"]) && isAtOrInside("/a/b", anyOf: ["/a/b"]))
      #expect(!isAtOrInside("/a/bc", anyOf: ["/a/b"]) && !isAtOrInside("a/b", anyOf: ["a"]))
      #expect(isAtOrInside("/x", anyOf: ["/"]))
    }
  }

  @Test func theDaemonsLookupIsPATHThenItsOwnDirectory() {
    let lookup = CommandLookup.daemon(path: "/usr/bin::/bin", executableDirectory: "/opt/ms")
    #expect(lookup.searchPath == ["/usr/bin", "/bin", "/opt/ms"])
    let unset = CommandLookup.daemon(path: nil, executableDirectory: "/usr/bin")
    #expect(unset.searchPath == CommandLookup.defaultSearchPath)
    #expect(CommandLookup.daemon().searchPath.last == CommandLookup.executableDirectory())
  }

  static let kernelMountpoints: [(String, String)] = [
    ("/proc/x", "lies in /proc"),
    ("/proc", "lies in /proc"),
    ("/sys/fs/x", "lies in /sys"),
    ("/dev/x", "lies in /dev"),
    ("/dev/shm/x", "lies in /dev"),
  ]

  @Test(arguments: kernelMountpoints)
  func kernelDirectoriesAreNoMountpoints(_ mountpoint: String, _ mention: String) {
    expectConfigError(
      mount("x", at: mountpoint, command: "/bin/sh"), code: .invalidPath, mount: "x",
      key: "mountpoint", mentions: [mention, "use a directory such as /mnt/NAME"])
  }

  @Test func aSymlinkIntoTheKernelsDirectoriesOrToRootIsCaught() throws {
    try withTemporaryDirectory { directory in
      #expect(symlink("/proc", directory + "/p") == 0)
      #expect(symlink("/", directory + "/root") == 0)
      expectConfigError(
        mount("x", at: directory + "/p/x", command: "/bin/sh"), code: .invalidPath, mount: "x",
        key: "mountpoint", mentions: ["lies in /proc (through symlinks: \"/proc/x\")"])
      expectConfigError(
        mount("x", at: directory + "/root", command: "/bin/sh"), code: .invalidPath, mount: "x",
        key: "mountpoint", mentions: ["is \"/\" (through symlinks: \"/\")"])
    }
  }
}

@Suite struct Warnings {
  @Test func anIncludeThatMatchesNothingIsAWarning() throws {
    try withTemporaryDirectory { directory in
      try write(
        "[supervisor]\ninclude = [\"mounts.d/*.toml\"]\n[mounts.a]\nmountpoint = \"/mnt/a\"\ncommand = [\"/bin/sh\"]\n",
        to: "mounts.toml", in: directory)
      let configuration = try ConfigLoader.load(path: directory + "/mounts.toml")
      #expect(configuration.mounts.count == 1)
      #expect(
        configuration.warnings.map(\.description) == [
          "\(directory)/mounts.toml: key \"supervisor.include\": \"mounts.d/*.toml\" matches no "
            + "file (looked for \"\(directory)/mounts.d/*.toml\")"
        ])
    }
  }

  @Test func aConfigurationWithoutMountsIsAWarning() throws {
    let configuration = try parse("[supervisor]\ncontrol_socket = \"/run/x.sock\"\n")
    #expect(configuration.mounts.isEmpty)
    #expect(configuration.warnings.count == 1)
    #expect(configuration.warnings.first?.description.contains("no mounts are configured") == true)
  }

  @Test func aValidConfigurationWithCommandsInstalledHasNoWarnings() throws {
    let configuration = try parse("[mounts.a]\nmountpoint = \"/mnt/a\"\ncommand = [\"sh\"]\n")
    #expect(configuration.warnings.isEmpty, "\(configuration.warnings)")
  }
}

@Suite struct EveryErrorInOnePass {
  @Test func everyErrorOfEveryFileIsReported() throws {
    try withTemporaryDirectory { directory in
      try write(
        """
        [supervisor]
        include = ["mounts.d/*.toml"]
        control_sockte = "/run/x.sock"

        [mounts.alpha]
        mountpoint = "relative/path"
        command = []
        start_timeout = "soon"
        user = "mountsup-no-such-account"

        [mounts.beta]
        mountpoint = "/mnt/beta"
        command = ["/bin/sh"]
        readiness = "ready"
        probe_path = "x"
        restart_delay_max = 0
        environment = { MOUNTSUP_NAME = "x", OK = 1 }
        """, to: "mounts.toml", in: directory)
      try write(
        "[mounts.gamma]\nmountpoint = \"/proc/gamma\"\ncommand = [\"/bin/sh\"]\nbogus = 1\n",
        to: "mounts.d/a.toml", in: directory)
      try write("[mounts.delta\n", to: "mounts.d/b.toml", in: directory)
      // gamma's program does not exist.
      try write(
        String(
          decoding: try Data(contentsOf: URL(fileURLWithPath: directory + "/mounts.d/a.toml")),
          as: UTF8.self
        )
        .replacingOccurrences(of: "/bin/sh", with: directory + "/no-such-program"),
        to: "mounts.d/a.toml", in: directory)
      try write(
        "[mounts.epsilon]\nmountpoint = \"/mnt/beta\"\ncommand = [\"/bin/sh\"]\n",
        to: "mounts.d/c.toml", in: directory)

      do throws(InvalidConfiguration) {
        let configuration = try ConfigLoader.load(
          path: directory + "/mounts.toml", options: .check())
        Issue.record("accepted: \(configuration)")
      } catch {
        let found = error.errors.map { ($0.file, $0.mount, $0.key, $0.code) }
        let main = directory + "/mounts.toml"
        let expected: [(String, String?, String?, ConfigError.Code)] = [
          (main, nil, "supervisor.control_sockte", .unknownKey),
          (main, "alpha", "mountpoint", .invalidPath),
          (main, "alpha", "command", .emptyCommand),
          (main, "alpha", "start_timeout", .invalidDuration),
          (main, "alpha", "user", .unknownAccount),
          (main, "beta", "readiness", .invalidValue),
          (main, "beta", "restart_delay_max", .invalidDuration),
          (main, "beta", "environment.MOUNTSUP_NAME", .invalidValue),
          (main, "beta", "environment.OK", .wrongType),
          (directory + "/mounts.d/a.toml", "gamma", "bogus", .unknownKey),
          (directory + "/mounts.d/a.toml", "gamma", "mountpoint", .invalidPath),
          (directory + "/mounts.d/b.toml", nil, nil, .invalidTOML),
          // beta's other keys are wrong, its mountpoint is taken all the same.
          (directory + "/mounts.d/c.toml", "epsilon", "mountpoint", .duplicateMountpoint),
          // The programs are looked up last, also those of mounts with other errors.
          (directory + "/mounts.d/a.toml", "gamma", "command", .commandNotFound),
        ]
        #expect(found.count == expected.count, "\(error)")
        for (index, item) in expected.enumerated() where index < found.count {
          #expect(found[index].0 == item.0, "\(index): \(error.errors[index])")
          #expect(found[index].1 == item.1, "\(index): \(error.errors[index])")
          #expect(found[index].2 == item.2, "\(index): \(error.errors[index])")
          #expect(found[index].3 == item.3, "\(index): \(error.errors[index])")
        }
        #expect(error.description.hasPrefix("\(expected.count) errors:\n"))
        #expect(error.description.split(separator: "\n").count == expected.count + 1)
      }
    }
  }
}
