import Foundation
import Glibc
import MountSupTestSupport
import Testing

/// How failures are told: once, in the worker's most useful words, and safely for a terminal.
@Suite("what a failure tells")
struct ReportingTests {
  @Test("a command that does not exist fails once, clearly, without five retries")
  func aMissingCommandIsNotRetried() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let (notify, daemon) = try sandbox.startDaemon(
      mountSection("gone", at: "\(sandbox.path)/gone", command: ["no-such-fuse-program", "x"]))
    defer { daemon.stop() }
    #expect(daemon.exitCode() == 1, "log:\n\(daemon.log)")
    notify.drain()
    let log = daemon.log
    #expect(log.components(separatedBy: "cannot run \"no-such-fuse-program\"").count == 2, "\(log)")
    #expect(log.contains("not retried"), "\(log)")
    #expect(!log.contains("attempt 2"), "\(log)")
  }

  @Test("mountctl logs shows a worker's escape sequences, it does not send them to the terminal")
  func logsMakeControlCharactersVisible() async throws {
    let daemon = try TestDaemon()
    defer { daemon.finish() }
    try daemon.sandbox.writeConfig(
      mountSection(
        "loud", at: daemon.mountpoint("loud"),
        command: ["/bin/sh", "-c", #"printf '\033]0;pwned\007\033[31mred\n' >&2; exit 1"#],
        ["restart": "\"never\"", "required": "false"]),
      controlSocket: daemon.socketPath)
    try await daemon.start()
    try await waitFor("loud to fail") { try daemon.mount("loud").state == "failed" }
    let logs = try await daemon.ctl("logs", "loud")
    #expect(logs.status == 0, "\(logs)")
    #expect(logs.output.contains("^[]0;pwned^G^[[31mred"), "\(logs)")
    #expect(!logs.output.contains("\u{1b}"))
  }
}
