import Foundation
import MountConfig
import Testing

/// A mount table that is valid on its own; cases add or override one key.
private func mount(_ name: String = "photos", _ extra: String = "") -> String {
  """
  [mounts.\(name)]
  mountpoint = "/mnt/\(name)"
  command = ["mountsup-mirror", "/srv/\(name)", "{mountpoint}"]
  \(extra)

  """
}

/// One bad configuration and what its error must say.
struct BadConfig: Sendable, CustomTestStringConvertible {
  let toml: String
  let code: ConfigError.Code
  let mount: String?
  let key: String?
  let mentions: [String]
  let testDescription: String

  init(
    _ label: String, _ toml: String, _ code: ConfigError.Code, mount: String? = "photos",
    key: String?, mentions: [String] = []
  ) {
    self.testDescription = label
    self.toml = toml
    self.code = code
    self.mount = mount
    self.key = key
    self.mentions = mentions
  }
}

@Suite struct ConfigErrors {
  @Test func describesFileMountKeyAndFix() {
    let error = ConfigError(
      code: .invalidDuration, file: mainFile, mount: "photos", key: "start_timeout",
      message: #""10 sec" is not a duration (use e.g. "500ms", "10s", "2m", "1h", "1m30s")"#)
    #expect(
      error.description
        == #"/etc/mountsup/mounts.toml: mount "photos", key "start_timeout": "10 sec" is not a duration (use e.g. "500ms", "10s", "2m", "1h", "1m30s")"#
    )
    let syntax = ConfigError(
      code: .invalidTOML, file: mainFile, message: "invalid TOML: oops", line: 3, column: 7)
    #expect(syntax.description == "/etc/mountsup/mounts.toml:3:7: invalid TOML: oops")
  }

  @Test func aBadDurationSaysHowToWriteOne() {
    let error = expectConfigError(
      mount("photos", #"start_timeout = "10 sec""#), code: .invalidDuration, mount: "photos",
      key: "start_timeout")
    #expect(
      error?.description
        == #"/etc/mountsup/mounts.toml: mount "photos", key "start_timeout": "10 sec" is not a duration (use e.g. "500ms", "10s", "2m", "1h", "1m30s")"#
    )
  }

  @Test func aMissingMainFileSaysItDoesNotExist() throws {
    try withTemporaryDirectory { directory in
      let path = directory + "/mounts.toml"
      expectConfigError(
        in: path, code: .fileNotFound, mount: nil, key: nil, mentions: ["does not exist"]
      ) { () throws(InvalidConfiguration) in try ConfigLoader.load(path: path) }
    }
  }

  @Test func aRelativeMainPathIsNamedAbsolute() {
    let path = FileManager.default.currentDirectoryPath + "/no-such-mounts.toml"
    expectConfigError(
      in: path, code: .fileNotFound, mount: nil, key: nil, mentions: ["does not exist"]
    ) { () throws(InvalidConfiguration) in try ConfigLoader.load(path: "./no-such-mounts.toml") }
  }

  @Test func aDirectoryAsMainFileIsNotARegularFile() throws {
    try withTemporaryDirectory { directory in
      expectConfigError(
        in: directory, code: .notRegularFile, mount: nil, key: nil,
        mentions: ["is a directory, not a regular file"]
      ) { () throws(InvalidConfiguration) in try ConfigLoader.load(path: directory) }
    }
  }

  @Test func anUnreadableMainFileSaysWhy() throws {
    try withTemporaryDirectory { directory in
      let path = directory + "/mounts.toml"
      try write("", to: "mounts.toml", in: directory)
      chmod(path, 0)
      // Root reads a file of mode 0 all the same; an invalid UTF-8 file is unreadable for all.
      try Data([0x5B, 0xFF, 0xFE, 0x5D]).write(to: URL(fileURLWithPath: path))
      expectConfigError(
        in: path, code: .unreadableFile, mount: nil, key: nil,
        mentions: ["cannot read the file", "UTF-8"]
      ) { () throws(InvalidConfiguration) in try ConfigLoader.load(path: path) }
    }
  }

  @Test func aSyntaxErrorNamesLineAndColumn() {
    let error = expectConfigError(
      "[supervisor]\ncontrol_socket = \"/run/x.sock\"\nbroken = \n", code: .invalidTOML,
      mount: nil, key: nil, mentions: ["\(mainFile):3:", "invalid TOML"])
    #expect(error?.line == 3)
    #expect(error?.column != nil)
  }

  @Test func duplicateKeysInOneFileAreASyntaxError() {
    expectConfigError(
      mount() + "mountpoint = \"/mnt/other\"\n", code: .invalidTOML, mount: nil, key: nil,
      mentions: [":5:"])
  }

  static let unknownKeys: [BadConfig] = [
    BadConfig(
      "typo in a mount", mount("photos", #"mountpiont = "/mnt/x""#), .unknownKey,
      key: "mountpiont", mentions: [#"did you mean "mountpoint"?"#]),
    BadConfig(
      "wrong case in a mount", mount("photos", "Required = true"), .unknownKey, key: "Required",
      mentions: [#"did you mean "required"?"#]),
    BadConfig(
      "no close match lists the known keys", mount("photos", "colour = 1"), .unknownKey,
      key: "colour", mentions: ["known keys: mountpoint, command, readiness"]),
    BadConfig(
      "a nested table that is not a mount key", "[mounts.photos.opts]\nx = 1\n" + mount(),
      .unknownKey, key: "opts"),
    BadConfig(
      "typo at top level", "[mount.photos]\nmountpoint = \"/mnt/p\"\n", .unknownKey, mount: nil,
      key: "mount", mentions: [#"did you mean "mounts"?"#]),
    BadConfig(
      "mount key at top level", "mountpoint = \"/mnt/p\"\n", .unknownKey, mount: nil,
      key: "mountpoint", mentions: ["known keys: supervisor, mounts"]),
    BadConfig(
      "typo in [supervisor]", "[supervisor]\ncontrol_sock = \"/run/x\"\n", .unknownKey, mount: nil,
      key: "supervisor.control_sock", mentions: [#"did you mean "control_socket"?"#]),
    BadConfig(
      "typo in [supervisor] include", "[supervisor]\nincludes = []\n", .unknownKey, mount: nil,
      key: "supervisor.includes", mentions: [#"did you mean "include"?"#]),
  ]

  @Test(arguments: unknownKeys) func unknownKeysAreErrors(_ bad: BadConfig) {
    expectConfigError(
      bad.toml, code: bad.code, mount: bad.mount, key: bad.key, mentions: bad.mentions)
  }

  static let wrongTypes: [BadConfig] = [
    BadConfig(
      "mountpoint", "[mounts.photos]\nmountpoint = 5\ncommand = [\"w\"]\n", .wrongType,
      key: "mountpoint", mentions: ["expected a string, found an integer"]),
    BadConfig(
      "command as string", "[mounts.photos]\nmountpoint = \"/mnt/p\"\ncommand = \"w -f\"\n",
      .wrongType, key: "command", mentions: ["expected an array of strings, found a string"]),
    BadConfig(
      "command element", "[mounts.photos]\nmountpoint = \"/mnt/p\"\ncommand = [\"w\", 1]\n",
      .wrongType, key: "command", mentions: ["command[1] is an integer"]),
    BadConfig(
      "required", mount("photos", #"required = "yes""#), .wrongType, key: "required",
      mentions: ["expected a boolean, found a string"]),
    BadConfig(
      "start_limit_burst", mount("photos", "start_limit_burst = 1.5"), .wrongType,
      key: "start_limit_burst", mentions: ["expected an integer, found a floating-point number"]),
    BadConfig(
      "duration as float", mount("photos", "stop_timeout = 1.5"), .wrongType, key: "stop_timeout",
      mentions: ["found a floating-point number", "integer number of seconds"]),
    BadConfig(
      "readiness", mount("photos", "readiness = true"), .wrongType, key: "readiness",
      mentions: ["expected a string, found a boolean"]),
    BadConfig(
      "environment", mount("photos", #"environment = "A=1""#), .wrongType, key: "environment",
      mentions: ["expected a table, found a string"]),
    BadConfig(
      "user", mount("photos", "user = 0"), .wrongType, key: "user",
      mentions: ["expected a string, found an integer"]),
    BadConfig(
      "a mount that is not a table", "[mounts]\nphotos = \"/mnt/p\"\n", .wrongType, mount: nil,
      key: "mounts.photos", mentions: ["expected a table, found a string"]),
    BadConfig(
      "mounts", "mounts = []\n", .wrongType, mount: nil, key: "mounts",
      mentions: ["expected a table, found an array"]),
    BadConfig(
      "supervisor include", "[supervisor]\ninclude = \"mounts.d/*.toml\"\n", .wrongType,
      mount: nil, key: "supervisor.include", mentions: ["expected an array of strings"]),
    BadConfig(
      "supervisor control_socket", "[supervisor]\ncontrol_socket = 1979-05-27\n", .wrongType,
      mount: nil, key: "supervisor.control_socket", mentions: ["found a date"]),
  ]

  @Test(arguments: wrongTypes) func wrongTypesSayExpectedAndFound(_ bad: BadConfig) {
    expectConfigError(
      bad.toml, code: bad.code, mount: bad.mount, key: bad.key, mentions: bad.mentions)
  }

  static let badPaths: [BadConfig] = [
    BadConfig(
      "relative mountpoint", "[mounts.photos]\nmountpoint = \"mnt/p\"\ncommand = [\"w\"]\n",
      .invalidPath, key: "mountpoint", mentions: ["relative", "absolute"]),
    BadConfig(
      "empty mountpoint", "[mounts.photos]\nmountpoint = \"\"\ncommand = [\"w\"]\n", .invalidPath,
      key: "mountpoint", mentions: ["must not be empty"]),
    BadConfig(
      "root mountpoint", "[mounts.photos]\nmountpoint = \"/\"\ncommand = [\"w\"]\n", .invalidPath,
      key: "mountpoint", mentions: [#""/" cannot be a mountpoint"#]),
    BadConfig(
      "root mountpoint spelled oddly",
      "[mounts.photos]\nmountpoint = \"//./\"\ncommand = [\"w\"]\n",
      .invalidPath, key: "mountpoint", mentions: ["cannot be a mountpoint"]),
    BadConfig(
      "dot-dot in mountpoint", "[mounts.photos]\nmountpoint = \"/mnt/../etc\"\ncommand = [\"w\"]\n",
      .invalidPath, key: "mountpoint", mentions: [#"must not contain "..""#]),
    BadConfig(
      "absolute probe_path", mount("photos", "readiness = \"probe\"\nprobe_path = \"/srv\""),
      .invalidPath, key: "probe_path", mentions: ["relative to the mountpoint"]),
    BadConfig(
      "probe_path leaving the mount",
      mount("photos", "readiness = \"probe\"\nprobe_path = \"a/../..\""),
      .invalidPath, key: "probe_path", mentions: [#"must not contain "..""#]),
    BadConfig(
      "relative control_socket", "[supervisor]\ncontrol_socket = \"run/x.sock\"\n", .invalidPath,
      mount: nil, key: "supervisor.control_socket", mentions: ["absolute"]),
  ]

  @Test(arguments: badPaths) func badPathsAreErrors(_ bad: BadConfig) {
    expectConfigError(
      bad.toml, code: bad.code, mount: bad.mount, key: bad.key, mentions: bad.mentions)
  }

  static let badCommands: [BadConfig] = [
    BadConfig(
      "missing command", "[mounts.photos]\nmountpoint = \"/mnt/p\"\n", .missingKey, key: "command",
      mentions: ["required key is missing"]),
    BadConfig(
      "missing mountpoint", "[mounts.photos]\ncommand = [\"w\"]\n", .missingKey, key: "mountpoint",
      mentions: ["required key is missing"]),
    BadConfig(
      "empty command", "[mounts.photos]\nmountpoint = \"/mnt/p\"\ncommand = []\n", .emptyCommand,
      key: "command", mentions: ["is empty"]),
    BadConfig(
      "empty program", "[mounts.photos]\nmountpoint = \"/mnt/p\"\ncommand = [\"\", \"x\"]\n",
      .emptyCommand, key: "command", mentions: ["command[0]"]),
  ]

  @Test(arguments: badCommands) func missingOrEmptyCommandsAreErrors(_ bad: BadConfig) {
    expectConfigError(
      bad.toml, code: bad.code, mount: bad.mount, key: bad.key, mentions: bad.mentions)
  }

  static let badDurations: [BadConfig] = [
    BadConfig(
      "no unit", mount("photos", #"stop_timeout = "10""#), .invalidDuration, key: "stop_timeout",
      mentions: [#""10" is not a duration"#, "1m30s"]),
    BadConfig(
      "unknown unit", mount("photos", #"start_limit_interval = "1d""#), .invalidDuration,
      key: "start_limit_interval", mentions: ["is not a duration"]),
    BadConfig(
      "negative", mount("photos", #"restart_delay = "-1s""#), .invalidDuration,
      key: "restart_delay", mentions: ["is not a duration"]),
    BadConfig(
      "negative integer", mount("photos", "restart_delay = -1"), .invalidDuration,
      key: "restart_delay", mentions: ["negative"]),
    BadConfig(
      "hang_timeout without unit", mount("photos", #"hang_timeout = "60""#), .invalidDuration,
      key: "hang_timeout", mentions: ["is not a duration"]),
    BadConfig(
      "zero timeout", mount("photos", #"start_timeout = "0s""#), .invalidDuration,
      key: "start_timeout", mentions: ["greater than 0"]),
    BadConfig(
      "zero integer", mount("photos", "stop_timeout = 0"), .invalidDuration, key: "stop_timeout",
      mentions: ["greater than 0"]),
    BadConfig(
      "zero max delay", mount("photos", "restart_delay = 0\nrestart_delay_max = 0"),
      .invalidDuration, key: "restart_delay_max", mentions: ["greater than 0"]),
    BadConfig(
      "max below first delay",
      mount("photos", "restart_delay = \"5s\"\nrestart_delay_max = \"1s\""),
      .invalidDuration, key: "restart_delay_max",
      mentions: ["1s is shorter than restart_delay (5s)"]),
    BadConfig(
      "max below the default first delay", mount("photos", #"restart_delay_max = "50ms""#),
      .invalidDuration, key: "restart_delay_max", mentions: ["shorter than restart_delay (100ms)"]),
    BadConfig(
      "overflow", mount("photos", #"start_timeout = "9999999999999h""#), .invalidDuration,
      key: "start_timeout", mentions: ["is not a duration"]),
  ]

  @Test(arguments: badDurations) func badDurationsAreErrors(_ bad: BadConfig) {
    expectConfigError(
      bad.toml, code: bad.code, mount: bad.mount, key: bad.key, mentions: bad.mentions)
  }

  @Test func restartDelayMayBeZero() throws {
    let configuration = try parse(mount("photos", #"restart_delay = "0s""#))
    #expect(configuration.mounts.first?.restartDelay == .zero)
  }

  static let badValues: [BadConfig] = [
    BadConfig(
      "start_limit_burst 0", mount("photos", "start_limit_burst = 0"), .invalidValue,
      key: "start_limit_burst", mentions: ["at least 1, found 0"]),
    BadConfig(
      "unknown readiness", mount("photos", #"readiness = "ready""#), .invalidValue,
      key: "readiness", mentions: [#""ready" is not one of "protocol", "notify", "probe""#]),
    BadConfig(
      "unknown restart", mount("photos", #"restart = "on_failure""#), .invalidValue,
      key: "restart", mentions: [#""on_failure" is not one of "always", "on-failure", "never""#]),
    BadConfig(
      "probe_path without probe", mount("photos", #"probe_path = "x""#), .invalidValue,
      key: "probe_path",
      mentions: [#"only used with readiness = "probe""#, #"readiness = "protocol""#]),
    BadConfig(
      "probe_path with notify", mount("photos", "readiness = \"notify\"\nprobe_path = \"x\""),
      .invalidValue, key: "probe_path", mentions: [#"readiness = "notify""#]),
    BadConfig(
      "empty include pattern", "[supervisor]\ninclude = [\"\"]\n", .invalidValue, mount: nil,
      key: "supervisor.include", mentions: ["must not be empty"]),
  ]

  @Test(arguments: badValues) func badValuesAreErrors(_ bad: BadConfig) {
    expectConfigError(
      bad.toml, code: bad.code, mount: bad.mount, key: bad.key, mentions: bad.mentions)
  }

  @Test(arguments: ["-photos", "_x", ".hidden", "a b", "a/b", "ünï", "a$b", ""])
  func mountNamesMustBeSafeForLogsAndPaths(_ name: String) {
    let toml = "[mounts.\"\(name)\"]\nmountpoint = \"/mnt/x\"\ncommand = [\"w\"]\n"
    expectConfigError(
      toml, code: .invalidValue, mount: name, key: nil,
      mentions: ["invalid mount name", "letters, digits"])
  }

  static let badEnvironments: [BadConfig] = [
    BadConfig(
      "non-string value", mount("photos", "environment = { DEBUG = 1 }"), .wrongType,
      key: "environment.DEBUG", mentions: ["expected a string, found an integer"]),
    BadConfig(
      "name with =", mount("photos", #"environment = { "A=B" = "x" }"#), .invalidValue,
      key: "environment.A=B", mentions: ["not a valid environment variable name"]),
    BadConfig(
      "empty name", mount("photos", #"environment = { "" = "x" }"#), .invalidValue,
      key: "environment.", mentions: ["not a valid environment variable name"]),
    BadConfig(
      "reserved name", mount("photos", #"environment = { MOUNTSUP_NOTIFY_FD = "4" }"#),
      .invalidValue, key: "environment.MOUNTSUP_NOTIFY_FD", mentions: ["set by the supervisor"]),
    BadConfig(
      "NOTIFY_SOCKET", mount("photos", #"environment = { NOTIFY_SOCKET = "/run/x" }"#),
      .invalidValue, key: "environment.NOTIFY_SOCKET", mentions: ["set by the supervisor"]),
  ]

  @Test(arguments: badEnvironments) func badEnvironmentsAreErrors(_ bad: BadConfig) {
    expectConfigError(
      bad.toml, code: bad.code, mount: bad.mount, key: bad.key, mentions: bad.mentions)
  }

  static let unknownAccounts: [BadConfig] = [
    BadConfig(
      "user", mount("photos", #"user = "\#(missingAccount)""#), .unknownAccount, key: "user",
      mentions: ["no user \"\(missingAccount)\" exists on this machine"]),
    BadConfig(
      "group", mount("photos", #"group = "\#(missingAccount)""#), .unknownAccount, key: "group",
      mentions: ["no group \"\(missingAccount)\" exists on this machine"]),
    BadConfig(
      "admin_group", "[supervisor]\nadmin_group = \"\(missingAccount)\"\n", .unknownAccount,
      mount: nil, key: "supervisor.admin_group", mentions: ["no group"]),
    BadConfig(
      "status_group", "[supervisor]\nstatus_group = \"\(missingAccount)\"\n", .unknownAccount,
      mount: nil, key: "supervisor.status_group", mentions: ["no group"]),
  ]

  @Test(arguments: unknownAccounts) func accountsMustExist(_ bad: BadConfig) {
    expectConfigError(
      bad.toml, code: bad.code, mount: bad.mount, key: bad.key, mentions: bad.mentions)
  }

  @Test func duplicateMountpointsNameBothMounts() {
    expectConfigError(
      """
      [mounts.alpha]
      mountpoint = "/mnt/shared"
      command = ["w"]
      [mounts.beta]
      mountpoint = "/mnt//shared/./"
      command = ["w"]
      """, code: .duplicateMountpoint, mount: "beta", key: "mountpoint",
      mentions: [#""/mnt/shared" is already the mountpoint of mount "alpha""#])
  }

  @Test func nestedMountpointsAreAllowed() throws {
    let configuration = try parse(
      """
      [mounts.outer]
      mountpoint = "/mnt/outer"
      command = ["w"]
      [mounts.inner]
      mountpoint = "/mnt/outer/inner"
      command = ["w"]
      """)
    #expect(configuration.mounts.map(\.mountpoint) == ["/mnt/outer/inner", "/mnt/outer"])
  }
}

@Suite struct DropInErrors {
  /// Writes a main file including `mounts.d/*.toml` plus the given drop-ins, then loads it.
  private func load(
    main: String = "", dropIns: [String: String], in directory: String
  ) throws -> () throws(InvalidConfiguration) -> Configuration {
    try write(
      "[supervisor]\ninclude = [\"mounts.d/*.toml\"]\n" + main, to: "mounts.toml", in: directory)
    for (name, contents) in dropIns {
      try write(contents, to: "mounts.d/" + name, in: directory)
    }
    return { () throws(InvalidConfiguration) in
      try ConfigLoader.load(path: directory + "/mounts.toml")
    }
  }

  @Test func duplicateNamesAcrossFilesNameBothFiles() throws {
    try withTemporaryDirectory { directory in
      let loader = try load(
        main: mount("photos"), dropIns: ["a.toml": mount("photos")], in: directory)
      expectConfigError(
        in: directory + "/mounts.d/a.toml", code: .duplicateName, mount: "photos", key: nil,
        mentions: ["already defined in \(directory)/mounts.toml"], loader)
    }
  }

  @Test func duplicateMountpointsAcrossFilesNameTheOtherFile() throws {
    try withTemporaryDirectory { directory in
      let loader = try load(
        dropIns: [
          "a.toml": mount("alpha"),
          "b.toml": "[mounts.beta]\nmountpoint = \"/mnt/alpha/\"\ncommand = [\"w\"]\n",
        ], in: directory)
      expectConfigError(
        in: directory + "/mounts.d/b.toml", code: .duplicateMountpoint, mount: "beta",
        key: "mountpoint", mentions: ["mount \"alpha\" in \(directory)/mounts.d/a.toml"], loader)
    }
  }

  @Test func aSupervisorTableInADropInIsAnError() throws {
    try withTemporaryDirectory { directory in
      let loader = try load(
        dropIns: ["a.toml": "[supervisor]\ncontrol_socket = \"/run/x.sock\"\n" + mount()],
        in: directory)
      expectConfigError(
        in: directory + "/mounts.d/a.toml", code: .misplacedTable, mount: nil, key: "supervisor",
        mentions: [
          "only define [mounts.NAME] tables", "move [supervisor] to \(directory)/mounts.toml",
        ],
        loader)
    }
  }

  @Test func anUnknownTopLevelKeyInADropInIsAnError() throws {
    try withTemporaryDirectory { directory in
      let loader = try load(dropIns: ["a.toml": "[mount.photos]\n"], in: directory)
      expectConfigError(
        in: directory + "/mounts.d/a.toml", code: .unknownKey, mount: nil, key: "mount",
        mentions: [#"did you mean "mounts"?"#], loader)
    }
  }

  @Test func anInvalidDropInNamesThatFile() throws {
    try withTemporaryDirectory { directory in
      let loader = try load(
        dropIns: ["a.toml": mount("alpha"), "b.toml": "[mounts.beta\nmountpoint = 1\n"],
        in: directory)
      let error = expectConfigError(
        in: directory + "/mounts.d/b.toml", code: .invalidTOML, mount: nil, key: nil,
        mentions: ["\(directory)/mounts.d/b.toml:1:"], loader)
      #expect(error?.line == 1)
    }
  }

  @Test func anErrorInsideADropInMountNamesFileMountAndKey() throws {
    try withTemporaryDirectory { directory in
      let loader = try load(dropIns: ["a.toml": mount("alpha", "comand = []")], in: directory)
      expectConfigError(
        in: directory + "/mounts.d/a.toml", code: .unknownKey, mount: "alpha", key: "comand",
        mentions: [#"did you mean "command"?"#], loader)
    }
  }
}
