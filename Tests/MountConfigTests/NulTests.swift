import MountConfig
import Testing

/// A NUL in a string used to be cut off silently (`"/srv/n\u0000x"` ran at `/srv/n`).
@Suite struct NulCharacters {
  private static func mount(_ lines: String) -> String {
    "[mounts.photos]\nmountpoint = \"/mnt/photos\"\ncommand = [\"w\", \"{mountpoint}\"]\n" + lines
      + "\n"
  }

  static let cases: [BadConfig] = [
    BadConfig(
      "mountpoint", "[mounts.photos]\nmountpoint = \"/srv/n\\u0000x\"\ncommand = [\"w\"]\n",
      .invalidValue, key: "mountpoint", mentions: ["NUL character"]),
    BadConfig(
      "mountpoint, long escape",
      "[mounts.photos]\nmountpoint = \"/srv/n\\U00000000x\"\ncommand = [\"w\"]\n",
      .invalidValue, key: "mountpoint", mentions: ["NUL character"]),
    BadConfig(
      "command argument",
      "[mounts.photos]\nmountpoint = \"/mnt/p\"\ncommand = [\"w\", \"a\\u0000b\"]\n",
      .invalidValue, key: "command", mentions: ["command[1] contains a NUL character"]),
    BadConfig(
      "program", "[mounts.photos]\nmountpoint = \"/mnt/p\"\ncommand = [\"\"\"w\\u0000\"\"\"]\n",
      .invalidValue, key: "command", mentions: ["command[0] contains a NUL character"]),
    BadConfig(
      "user", mount("user = \"root\\u0000evil\""), .invalidValue, key: "user",
      mentions: ["NUL character"]),
    BadConfig(
      "group", mount("group = \"root\\u0000\""), .invalidValue, key: "group",
      mentions: ["NUL character"]),
    BadConfig(
      "environment value", mount("environment = { RCLONE_CONFIG = \"/etc/r\\u0000.conf\" }"),
      .invalidValue, key: "environment.RCLONE_CONFIG", mentions: ["NUL character"]),
    BadConfig(
      "probe_path", mount("readiness = \"probe\"\nprobe_path = \"a\\u0000\""), .invalidValue,
      key: "probe_path", mentions: ["NUL character"]),
    BadConfig(
      "control_socket", "[supervisor]\ncontrol_socket = \"/run/x\\u0000.sock\"\n", .invalidValue,
      mount: nil, key: "supervisor.control_socket", mentions: ["NUL character"]),
    BadConfig(
      "include", "[supervisor]\ninclude = [\"mounts.d/\\u0000*.toml\"]\n", .invalidValue,
      mount: nil, key: "supervisor.include", mentions: ["include[0] contains a NUL character"]),
    BadConfig(
      "admin_group", "[supervisor]\nadmin_group = \"root\\u0000\"\n", .invalidValue, mount: nil,
      key: "supervisor.admin_group", mentions: ["NUL character"]),
  ]

  @Test(arguments: cases) func nulIsRejectedNamingFileMountAndKey(_ bad: BadConfig) {
    expectConfigError(
      bad.toml, code: bad.code, mount: bad.mount, key: bad.key, mentions: bad.mentions)
  }

  @Test func aNulInAnEnvironmentNameIsRejected() {
    do {
      let configuration = try parse(Self.mount("environment = { \"A\\u0000B\" = \"x\" }"))
      Issue.record("accepted: \(configuration.mounts)")
    } catch {
      let error = error.errors[0]
      #expect(error.code == .invalidValue && error.mount == "photos", "\(error)")
      #expect(
        error.description.contains(#"key "environment.A\u0000B""#)
          && error.description.contains("the variable name contains a NUL character"),
        "\(error)")
    }
  }

  @Test func aNulInAMountNameIsRejected() {
    do {
      let configuration = try parse(
        "[mounts.\"a\\u0000b\"]\nmountpoint = \"/mnt/a\"\ncommand = [\"w\"]\n")
      Issue.record("accepted: \(configuration.mounts)")
    } catch {
      #expect(error.description.contains(#"mount "a\u0000b": the mount name contains a NUL"#))
    }
  }

  @Test func aRawNulByteIsASyntaxErrorNotTheEndOfTheFile() {
    // Before, everything after the NUL was silently dropped: here the mount table.
    let error = expectConfigError(
      "# the end?\u{0}\n[mounts.photos]\nmountpoint = \"/mnt/p\"\ncommand = [\"w\"]\n",
      code: .invalidTOML, mount: nil, key: nil, mentions: ["\(mainFile):1:11:", "NUL byte"])
    #expect(error?.line == 1 && error?.column == 11)
  }

  @Test func escapesThatAreNoNulStayAsWritten() throws {
    let configuration = try parse(
      """
      # A comment may say "\\u0000".
      [mounts.photos]
      mountpoint = "/mnt/photos"
      command = ['w\\u0000', "a\\\\u0000", "\\u0041", '''x\\U00000000''']
      environment = { A = "\\t", B = "\\\\" }
      """)
    let mount = try #require(configuration.mounts.first)
    #expect(mount.command == ["w\\u0000", "a\\u0000", "A", "x\\U00000000"])
    #expect(mount.environment == ["A": "\t", "B": "\\"])
  }
}
