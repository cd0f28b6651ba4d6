import Foundation
import Glibc
import MountControl
import MountSupTestSupport
import Testing

@Suite("mountctl's command line: where --socket goes, MOUNTSUP_SOCKET, durations")
struct CommandLineTests {
  @Test("--socket before the command, MOUNTSUP_SOCKET as the default, --timeout 5 is 5 s")
  func socketAndTimeout() async throws {
    try await withDaemon([TestMount(name: "alpha")]) { daemon in
      let before = try await daemon.run(["--socket", daemon.socketPath, "status"])
      #expect(before.status == 0 && before.output.contains("alpha"), "\(before)")
      let equals = try await daemon.run(["--socket=\(daemon.socketPath)", "wait-ready", "alpha"])
      #expect(equals.status == 0, "\(equals)")

      let environment = try await daemon.run(
        ["status"], environment: ["MOUNTSUP_SOCKET": daemon.socketPath])
      #expect(environment.status == 0 && environment.output.contains("alpha"), "\(environment)")
      let overridden = try await daemon.run(
        ["status", "--socket", daemon.socketPath],
        environment: ["MOUNTSUP_SOCKET": daemon.directory + "/nothing.sock"])
      #expect(overridden.status == 0, "--socket wins over the environment: \(overridden)")
      let wrong = try await daemon.run(
        ["status"], environment: ["MOUNTSUP_SOCKET": daemon.directory + "/nothing.sock"])
      #expect(wrong.status == 4 && wrong.errors.contains(daemon.directory + "/nothing.sock"))

      let seconds = try await daemon.run(
        ["wait-ready", "--timeout", "5", "--socket", daemon.socketPath])
      #expect(seconds.status == 0, "\(seconds)")
    }
  }
}

@Suite("--version")
struct VersionTests {
  @Test("mountsupd --version and mountctl --version print the release and exit 0")
  func bothPrintTheRelease() async throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    for binary in [daemonBinary, mountctl] {
      let name = (binary as NSString).lastPathComponent
      let run = try Spawned(
        [binary, "--version"], outputPath: "\(sandbox.path)/\(name).out",
        errorPath: "\(sandbox.path)/\(name).err")
      #expect(try await run.wait(timeout: .seconds(30)) == 0, "\(name): \(run.errors)")
      #expect(run.output == MountSupervisorRelease.identity + "\n", "\(name)")
    }
    #expect(MountSupervisorRelease.version == "0.3.0")
    // A commit of this checkout: the build knows what it was built from.
    let commit = String(MountSupervisorRelease.commit.prefix(12))
    let known = try Spawned(
      [
        "/usr/bin/git", "-C", packageDirectory, "rev-parse", "--verify", "--quiet",
        commit + "^{commit}",
      ],
      outputPath: "\(sandbox.path)/git.out", errorPath: "\(sandbox.path)/git.err")
    #expect(
      try await known.wait(timeout: .seconds(30)) == 0, "\(commit) is no commit of the checkout")
  }
}

extension TestDaemon {
  /// Runs `mountctl ARGUMENTS` exactly as given (no `--socket` added), with more environment.
  func run(_ arguments: [String], environment: [String: String?] = [:]) async throws -> Run {
    let name = "cli-\(UUID().uuidString.prefix(8))"
    let spawned = try Spawned(
      [mountctl] + arguments, outputPath: "\(directory)/\(name).out",
      errorPath: "\(directory)/\(name).err", environment: environment)
    let status = try await spawned.wait(timeout: .seconds(60))
    return Run(status: status, output: spawned.output, errors: spawned.errors)
  }
}

@Suite("mountsupd and a closed stdout or stderr")
struct ClosedOutputTests {
  @Test(
    "`mountsupd 2>&1 | head -n 1`: SIGPIPE does not end the daemon; it serves and stops cleanly")
  func survivesAClosedPipe() async throws {
    let daemon = try TestDaemon()
    defer { daemon.finish() }
    try daemon.write([TestMount(name: "alpha")])
    let shell = try Spawned(
      [
        "/bin/sh", "-c", "exec \"$0\" --config \"$1\" 2>&1 | head -n 1", daemonBinary,
        daemon.configPath,
      ],
      outputPath: daemon.directory + "/pipeline.out", errorPath: daemon.directory + "/pipeline.err")
    defer {
      kill(shell.pid, SIGKILL)
      _ = shell.waitBlocking(timeout: .seconds(10))
    }
    try await waitFor("alpha ready") { try daemon.mount("alpha").isReady }
    let pid = try #require(try daemon.status().service?.pid)
    try await waitFor("head to have exited, closing the pipe") {
      childPIDs(of: shell.pid).allSatisfy { !commandLine(of: $0).hasPrefix("head") }
    }

    // Log lines now go to a pipe nobody reads.
    for _ in 0..<2 {
      let restart = try await daemon.ctl("restart", "alpha")
      #expect(restart.status == 0, "\(restart)")
    }
    #expect(processExists(pid), "mountsupd still runs")
    #expect(try await daemon.ctl("status").status == 0)

    kill(pid, SIGTERM)
    try await waitFor("mountsupd to exit") { !processExists(pid) }
    #expect(access(daemon.socketPath, F_OK) != 0, "a clean exit removed its socket")
    #expect(fuseMount(at: daemon.mountpoint("alpha")) == nil)
  }
}

@Suite("mountsupd --check-config and the start: what is certain to fail, and what only may")
struct CheckConfigTests {
  private func checkConfig(_ sandbox: Sandbox, _ config: String) async throws -> Run {
    let name = "check-\(UUID().uuidString.prefix(8))"
    let run = try Spawned(
      [daemonBinary, "--check-config", "--config", config],
      outputPath: "\(sandbox.path)/\(name).out", errorPath: "\(sandbox.path)/\(name).err")
    let status = try await run.wait(timeout: .seconds(30))
    return Run(status: status, output: run.output, errors: run.errors)
  }

  @Test("a missing command fails the check but not the start; every error is listed")
  func missingCommand() async throws {
    let daemon = try TestDaemon()
    defer { daemon.finish() }
    try daemon.write(
      [
        TestMount(name: "alpha"),
        TestMount(name: "later", settings: ["required = false"]),
      ], supervisor: ["include = [\"mounts.d/*.toml\"]"])
    // "later" runs a program that is not installed (yet).
    let config = try #require(readFile(daemon.configPath))
    try daemon.sandbox.write(
      "mounts.toml",
      config.replacingOccurrences(
        of:
          "command = [\(toml(testWorker)), \"{mountpoint}\"]\nrestart_delay = \"50ms\"\nstop_timeout = \"3s\"\nrequired = false",
        with:
          "command = [\"mountsup-not-installed\", \"{mountpoint}\"]\nrestart = \"never\"\nrequired = false"
      ))
    #expect(try #require(readFile(daemon.configPath)).contains("mountsup-not-installed"))

    let check = try await checkConfig(daemon.sandbox, daemon.configPath)
    #expect(check.status == 1, "\(check)")
    #expect(
      check.errors.contains(
        "mount \"later\", key \"command\": command[0] \"mountsup-not-installed\" is not found"),
      "\(check)")
    #expect(check.errors.contains("warning: \(daemon.configPath): key \"supervisor.include\""))

    try await daemon.start()
    #expect(daemon.log.contains("mountsup-not-installed"), "warned at start: \(daemon.log)")
    #expect(try await daemon.ctl("wait-ready", "alpha").status == 0, "the rest runs")
  }

  @Test("a FIFO as configuration: the check says so at once")
  func fifo() async throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let fifo = sandbox.path + "/mounts.toml"
    #expect(mkfifo(fifo, 0o644) == 0)
    let check = try await checkConfig(sandbox, fifo)
    #expect(
      check.status == 1 && check.errors.contains("is a FIFO (named pipe), not a regular file"))
  }
}
