import Foundation
import MountConfig
import Testing

@Suite struct ValidConfigurations {
  @Test func everyKeyIsRead() throws {
    let configuration = try parse(
      """
      [supervisor]
      control_socket = "/run/mountsup//alt.sock"
      include = []
      admin_group = "\(existingAccount)"
      status_group = "\(existingAccount)"

      [mounts.photos]
      mountpoint = "/mnt/photos/"
      command = ["mountsup-mirror", "/srv/{name}", "{mountpoint}", "--tag={name}@{mountpoint}"]
      readiness = "probe"
      probe_path = "./albums//2024/"
      restart = "always"
      required = false
      start_timeout = "1m30s"
      stop_timeout = 20
      restart_delay = 0
      restart_delay_max = "1.5s"
      start_limit_burst = 3
      start_limit_interval = "2h"
      user = "\(existingAccount)"
      group = "\(existingAccount)"
      environment = { RCLONE_CONFIG = "/etc/rclone.conf", CACHE = "/var/cache/{name}" }
      """)

    #expect(
      configuration.supervisor
        == SupervisorSettings(
          controlSocket: "/run/mountsup/alt.sock", adminGroup: existingAccount,
          statusGroup: existingAccount))
    #expect(configuration.files == [mainFile])
    #expect(
      configuration.mounts == [
        MountSpec(
          name: "photos", mountpoint: "/mnt/photos",
          command: ["mountsup-mirror", "/srv/photos", "/mnt/photos", "--tag=photos@/mnt/photos"],
          readiness: .probe, probePath: "albums/2024", restart: .always, required: false,
          startTimeout: .seconds(90), stopTimeout: .seconds(20), restartDelay: .zero,
          restartDelayMax: .milliseconds(1500), startLimitBurst: 3,
          startLimitInterval: .seconds(7200), user: existingAccount, group: existingAccount,
          environment: ["RCLONE_CONFIG": "/etc/rclone.conf", "CACHE": "/var/cache/photos"],
          sourceFile: mainFile)
      ])
  }

  @Test func omittedKeysTakeTheDefaults() throws {
    let configuration = try parse(
      """
      [mounts.data]
      mountpoint = "/mnt/data"
      command = ["mountsup-mirror", "/srv/data", "{mountpoint}"]
      """)
    #expect(configuration.supervisor == SupervisorSettings())
    #expect(configuration.supervisor.controlSocket == "/run/mountsup/control.sock")
    #expect(
      configuration.mounts == [
        MountSpec(
          name: "data", mountpoint: "/mnt/data",
          command: ["mountsup-mirror", "/srv/data", "/mnt/data"], sourceFile: mainFile)
      ])
    let mount = try #require(configuration.mounts.first)
    #expect(mount.readiness == .protocol)
    #expect(mount.restart == .onFailure)
    #expect(mount.required)
    #expect(mount.startTimeout == .seconds(10))
    #expect(mount.restartDelay == .milliseconds(100))
    #expect(mount.startLimitBurst == 5)
    #expect(mount.hangTimeout == .seconds(60))
  }

  @Test func hangTimeoutZeroTurnsTheCheckOff() throws {
    let configuration = try parse(
      """
      [mounts.off]
      mountpoint = "/mnt/off"
      command = ["w"]
      hang_timeout = 0

      [mounts.short]
      mountpoint = "/mnt/short"
      command = ["w"]
      hang_timeout = "1m30s"
      """)
    #expect(configuration.mounts.map(\.hangTimeout) == [.zero, .seconds(90)])
  }

  @Test func anEmptyFileIsAConfigurationWithoutMounts() throws {
    let configuration = try parse("")
    #expect(configuration.mounts.isEmpty)
    #expect(configuration.supervisor == SupervisorSettings())
  }

  @Test func mountpointsAreNormalisedAndMountsSortedByName() throws {
    let configuration = try parse(
      """
      [mounts.zeta]
      mountpoint = "//mnt/./z//"
      command = ["w", "{mountpoint}"]
      [mounts."a.b@c"]
      mountpoint = "/mnt/z/inner"
      command = ["w", "{mountpoint}", "{unknown}", "{name"]
      [mounts.M-1]
      mountpoint = "/mnt/m"
      command = ["w"]
      """)
    #expect(configuration.mounts.map(\.name) == ["M-1", "a.b@c", "zeta"])
    #expect(configuration.mounts.map(\.mountpoint) == ["/mnt/m", "/mnt/z/inner", "/mnt/z"])
    #expect(configuration.mounts[1].command == ["w", "/mnt/z/inner", "{unknown}", "{name"])
    #expect(configuration.mounts[2].command == ["w", "/mnt/z"])
  }

  @Test func probePathDotMeansTheMountItself() throws {
    let configuration = try parse(
      """
      [mounts.p]
      mountpoint = "/mnt/p"
      command = ["w"]
      readiness = "probe"
      probe_path = "./"
      """)
    #expect(configuration.mounts.first?.probePath == ".")
  }

  @Test func includeGlobsReadDropInsInOrder() throws {
    try withTemporaryDirectory { directory in
      try write(
        """
        [supervisor]
        include = ["mounts.d/*.toml", "nothing-here/*.toml", "mounts.d/b.toml", "\(directory)/extra/*.toml"]

        [mounts.main]
        mountpoint = "/mnt/main"
        command = ["w"]
        """, to: "mounts.toml", in: directory)
      try write(
        "[mounts.bravo]\nmountpoint = \"/mnt/b\"\ncommand = [\"w\", \"{name}\"]\n",
        to: "mounts.d/b.toml", in: directory)
      try write(
        "[mounts.alpha]\nmountpoint = \"/mnt/a\"\ncommand = [\"w\"]\n[mounts.charlie]\nmountpoint = \"/mnt/c\"\ncommand = [\"w\"]\n",
        to: "mounts.d/a.toml", in: directory)
      try write("", to: "mounts.d/empty.toml", in: directory)
      try write("not toml at all", to: "mounts.d/README.txt", in: directory)
      try FileManager.default.createDirectory(
        atPath: directory + "/mounts.d/sub.toml", withIntermediateDirectories: true)
      try write(
        "[mounts.extra]\nmountpoint = \"/mnt/x\"\ncommand = [\"w\"]\n", to: "extra/x.toml",
        in: directory)

      let configuration = try ConfigLoader.load(path: directory + "/mounts.toml")
      #expect(
        configuration.files == [
          directory + "/mounts.toml", directory + "/mounts.d/a.toml",
          directory + "/mounts.d/b.toml", directory + "/extra/x.toml",
        ])
      #expect(configuration.dropInsWithoutMounts == [directory + "/mounts.d/empty.toml"])
      #expect(configuration.mounts.map(\.name) == ["alpha", "bravo", "charlie", "extra", "main"])
      #expect(
        configuration.mounts.map(\.sourceFile) == [
          directory + "/mounts.d/a.toml", directory + "/mounts.d/b.toml",
          directory + "/mounts.d/a.toml", directory + "/extra/x.toml", directory + "/mounts.toml",
        ])
      #expect(configuration.mounts[1].command == ["w", "bravo"])
    }
  }

  @Test func includesAreRelativeToTheGivenBaseDirectory() throws {
    try withTemporaryDirectory { directory in
      try write(
        "[mounts.dropped]\nmountpoint = \"/mnt/d\"\ncommand = [\"w\"]\n", to: "conf.d/d.toml",
        in: directory)
      let configuration = try ConfigLoader.parse(
        toml: "[supervisor]\ninclude = [\"conf.d/*.toml\"]\n", file: mainFile,
        baseDirectory: directory)
      #expect(configuration.files == [mainFile, directory + "/conf.d/d.toml"])
      #expect(configuration.mounts.map(\.name) == ["dropped"])
    }
  }

  @Test func aDirectoryWithGlobCharactersIsMatchedLiterally() throws {
    try withTemporaryDirectory { directory in
      let base = directory + "/conf[1]"
      try write(
        "[supervisor]\ninclude = [\"d/*.toml\"]\n", to: "conf[1]/mounts.toml", in: directory)
      try write(
        "[mounts.x]\nmountpoint = \"/mnt/x\"\ncommand = [\"w\"]\n", to: "conf[1]/d/x.toml",
        in: directory)
      let configuration = try ConfigLoader.load(path: base + "/mounts.toml")
      #expect(configuration.files == [base + "/mounts.toml", base + "/d/x.toml"])
    }
  }
}

@Suite struct ResolvedRendering {
  static let source = """
    [supervisor]
    admin_group = "\(existingAccount)"

    [mounts.photos]
    mountpoint = "/mnt/photos"
    command = ["mountsup-mirror", "/srv/a \\"quoted\\"", "{mountpoint}"]
    start_timeout = "1m30s"
    restart_delay = "250us"
    environment = { B = "2", A = "x\\ty" }

    [mounts."v1.2@host"]
    mountpoint = "/mnt/v"
    command = ["w"]
    readiness = "probe"
    probe_path = "dir"
    user = "\(existingAccount)"
    """

  @Test func listsEveryResolvedField() throws {
    let text = try parse(Self.source).renderResolved()
    #expect(
      text == """
        # 2 mounts, resolved from:
        #   /etc/mountsup/mounts.toml

        [supervisor]
        control_socket = "/run/mountsup/control.sock"
        admin_group    = "root"
        # status_group   (not set)

        [mounts.photos]
        # from /etc/mountsup/mounts.toml
        mountpoint           = "/mnt/photos"
        command              = ["mountsup-mirror", "/srv/a \\"quoted\\"", "/mnt/photos"]
        readiness            = "protocol"
        # probe_path           (not set)
        restart              = "on-failure"
        required             = true
        start_timeout        = "1m30s"
        stop_timeout         = "10s"
        restart_delay        = "250us"
        restart_delay_max    = "30s"
        start_limit_burst    = 5
        start_limit_interval = "1m"
        hang_timeout         = "1m"
        # user                 (not set)
        # group                (not set)
        environment          = { A = "x\\ty", B = "2" }

        [mounts."v1.2@host"]
        # from /etc/mountsup/mounts.toml
        mountpoint           = "/mnt/v"
        command              = ["w"]
        readiness            = "probe"
        probe_path           = "dir"
        restart              = "on-failure"
        required             = true
        start_timeout        = "10s"
        stop_timeout         = "10s"
        restart_delay        = "100ms"
        restart_delay_max    = "30s"
        start_limit_burst    = 5
        start_limit_interval = "1m"
        hang_timeout         = "1m"
        user                 = "root"
        # group                (not set)
        environment          = {}

        """)
  }

  @Test func theRenderingParsesBackToTheSameConfiguration() throws {
    let configuration = try parse(Self.source)
    let reparsed = try ConfigLoader.parse(
      toml: configuration.renderResolved(), file: "/tmp/resolved.toml")
    #expect(reparsed.supervisor == configuration.supervisor)
    #expect(
      reparsed.mounts.map { mount -> MountSpec in
        var copy = mount
        copy.sourceFile = mainFile
        return copy
      } == configuration.mounts)
  }
}

/// Log lines and the check's output: sources of mounts only, "1 mount" not "1 mounts".
@Suite struct Sources {
  @Test func commentOnlyDropInsAreNoSourceOfMounts() throws {
    try withTemporaryDirectory { directory in
      try write(
        "[supervisor]\ninclude = [\"mounts.d/*.toml\"]\n", to: "mounts.toml", in: directory)
      try write(
        "[mounts.a]\nmountpoint = \"/mnt/a\"\ncommand = [\"sh\"]\n", to: "mounts.d/a.toml",
        in: directory)
      try write(
        "## s3fs: an example\n# [mounts.archive]\n# mountpoint = \"/mnt/archive\"\n",
        to: "mounts.d/s3fs.toml", in: directory)
      let configuration = try ConfigLoader.load(path: directory + "/mounts.toml")
      #expect(configuration.files == [directory + "/mounts.toml", directory + "/mounts.d/a.toml"])
      #expect(configuration.dropInsWithoutMounts == [directory + "/mounts.d/s3fs.toml"])
      #expect(
        configuration.summary
          == "1 mount from \(directory)/mounts.toml, \(directory)/mounts.d/a.toml")
      let rendered = configuration.renderResolved()
      #expect(
        rendered.hasPrefix(
          """
          # 1 mount, resolved from:
          #   \(directory)/mounts.toml
          #   \(directory)/mounts.d/a.toml
          # Read, but defining no mounts:
          #   \(directory)/mounts.d/s3fs.toml

          """), "\(rendered)")
    }
  }

  @Test func countsHaveTheirNounInTheRightNumber() throws {
    #expect(counted(0, "mount") == "no mounts")
    #expect(counted(1, "mount") == "1 mount")
    #expect(counted(2, "mount") == "2 mounts")
    let two = try parse(
      "[mounts.a]\nmountpoint = \"/mnt/a\"\ncommand = [\"sh\"]\n"
        + "[mounts.b]\nmountpoint = \"/mnt/b\"\ncommand = [\"sh\"]\n")
    #expect(two.summary == "2 mounts from \(mainFile)")
    #expect(try parse("").summary == "no mounts from \(mainFile)")
  }
}

@Suite("[supervisor] metrics_file, metrics_listen, watch_config")
struct MetricsSettings {
  @Test func readAndDefaulted() throws {
    let set = try parse(
      """
      [supervisor]
      metrics_file = "/var/lib/node_exporter//mountsup.prom"
      metrics_listen = "127.0.0.1:9464"
      watch_config = true
      """)
    #expect(set.supervisor.metricsFile == "/var/lib/node_exporter/mountsup.prom")
    #expect(set.supervisor.metricsListen == ListenAddress("127.0.0.1:9464"))
    #expect(set.supervisor.metricsListen?.port == 9464)
    #expect(set.supervisor.watchConfig)
    #expect(
      try parse("[supervisor]\nmetrics_listen = \"[::1]:80\"").supervisor.metricsListen?.host
        == "::1")
    let unset = try parse("[supervisor]\n")
    #expect(unset.supervisor.metricsFile == nil && unset.supervisor.metricsListen == nil)
    #expect(!unset.supervisor.watchConfig)
  }

  @Test(
    "a listen address must be a numeric address and a port",
    arguments: [
      "localhost:9464", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "::1:9464", ":9464",
    ])
  func badListenAddress(_ text: String) {
    expectConfigError(
      "[supervisor]\nmetrics_listen = \"\(text)\"", code: .invalidValue, mount: nil,
      key: "supervisor.metrics_listen", mentions: [text, "127.0.0.1:9464"])
  }

  @Test func relativeMetricsFileAndWrongType() {
    expectConfigError(
      "[supervisor]\nmetrics_file = \"metrics.prom\"", code: .invalidPath, mount: nil,
      key: "supervisor.metrics_file")
    expectConfigError(
      "[supervisor]\nwatch_config = \"yes\"", code: .wrongType, mount: nil,
      key: "supervisor.watch_config")
  }
}
