import Foundation
import Glibc
import MountControl
import MountSupTestSupport
import Testing

@Suite("the control socket: permissions, activation, misbehaving clients")
struct SocketTests {
  @Test("0660, directory made; nobody without the groups cannot get in")
  func nobodyRefused() async throws {
    let daemon = try TestDaemon()
    defer { daemon.finish() }
    daemon.socketPath = daemon.directory + "/deep/er/control.sock"
    try daemon.write([TestMount(name: "alpha")])
    try await daemon.start()
    var info = stat()
    #expect(stat(daemon.socketPath, &info) == 0)
    #expect(info.st_mode & S_IFMT == S_IFSOCK && info.st_mode & 0o777 == 0o660)

    // Refused is not "cannot reach mountsupd" (4): a health check must not take it for down.
    let status = try await daemon.ctl("status", asNobody: true)
    #expect(status.status == 77, "\(status)")
    #expect(status.errors.contains("permission denied") && status.errors.contains("uid 65534"))
    #expect(status.errors.contains(daemon.socketPath) && !status.errors.contains("cannot reach"))
    let stop = try await daemon.ctl("stop", "alpha", asNobody: true)
    #expect(stop.status == 77)
    #expect(try await daemon.ctl("wait-ready").status == 0, "root may")
  }

  @Test("status_group may read, not change; the socket admits it by ACL beside admin_group")
  func statusGroupReadsOnly() async throws {
    let daemon = try TestDaemon()
    defer { daemon.finish() }
    try daemon.write(
      [TestMount(name: "alpha")],
      supervisor: ["admin_group = \"daemon\"", "status_group = \"nogroup\""])
    try await daemon.start()
    #expect(try await daemon.ctl("wait-ready").status == 0)
    let pid = try daemon.mount("alpha").pid

    var info = stat()
    #expect(stat(daemon.socketPath, &info) == 0 && info.st_gid == 1, "owned by admin_group daemon")
    let status = try await daemon.ctl("status", asNobody: true)
    #expect(status.status == 0, "\(status)")
    #expect(try await daemon.ctl("logs", "alpha", asNobody: true).status == 0)
    #expect(try await daemon.ctl("wait-ready", asNobody: true).status == 0)

    for command in [["stop", "alpha"], ["restart", "alpha"], ["reload"]] {
      let refused = try await daemon.ctl(command, asNobody: true)
      #expect(refused.status == 77, "\(command): \(refused)")
      #expect(refused.errors.contains("permission denied"))
      #expect(
        refused.errors.contains("admin_group \"daemon\"")
          && refused.errors.contains("status_group \"nogroup\""))
    }
    #expect(try daemon.mount("alpha").pid == pid, "nothing changed")
    #expect(daemon.log.contains("refused stop"))
  }

  @Test(
    "socket activation: the passed socket is used; SO_PEERCRED refuses whoever lacks the groups")
  func socketActivation() async throws {
    let daemon = try TestDaemon()
    defer { daemon.finish() }
    let configured = daemon.socketPath
    try daemon.write([TestMount(name: "alpha")], supervisor: ["status_group = \"daemon\""])
    // As a socket unit with SocketMode=0666 would pass it: anyone can connect.
    daemon.socketPath = daemon.directory + "/activated.sock"
    let listener = try listeningSocket(daemon.socketPath)
    defer { close(listener) }
    chmod(daemon.socketPath, 0o666)
    try await daemon.start(passing: listener)

    #expect(access(configured, F_OK) != 0, "no socket of its own")
    #expect(try await daemon.ctl("wait-ready").status == 0)
    let refused = try await daemon.ctl("status", asNobody: true)
    #expect(refused.status == 77, "\(refused)")
    #expect(
      refused.errors.contains("permission denied: uid 65534 (nobody)")
        && refused.errors.contains("neither root nor a member of status_group \"daemon\""),
      "\(refused)")
    #expect(daemon.stop() == 0)
    #expect(access(daemon.socketPath, F_OK) == 0, "the service manager's socket file is left alone")
  }

  @Test("a stale socket file is replaced; a live one is never taken over")
  func staleAndLiveSockets() async throws {
    let daemon = try TestDaemon()
    defer { daemon.finish() }
    try FileManager.default.createDirectory(
      atPath: daemon.directory + "/run", withIntermediateDirectories: true)
    // A socket nobody listens on any more: what a crashed daemon leaves.
    close(try listeningSocket(daemon.socketPath))
    try daemon.write([TestMount(name: "alpha")])
    try await daemon.start()
    #expect(try await daemon.ctl("status").status == 0)

    let second = try Spawned(
      [daemonBinary, "--config", daemon.configPath], outputPath: daemon.directory + "/second.out",
      errorPath: daemon.directory + "/second.log")
    let code = try await second.wait(timeout: .seconds(30))
    #expect(code != 0)
    #expect(
      second.errors.contains("another process (another mountsupd?) listens on it"),
      "\(second.errors)")
    #expect(try await daemon.ctl("status").status == 0, "the first daemon keeps its socket")
    #expect(daemon.stop() == 0)
    #expect(access(daemon.socketPath, F_OK) != 0, "removed at exit")
  }

  @Test(
    "garbage, oversized, stalled and vanishing clients: errors or drops, and the daemon serves on")
  func misbehavingClients() async throws {
    let mounts = [
      TestMount(name: "alpha"),
      // Starting for the whole test, however slow a loaded machine makes it: a start that
      // timed out would answer wait-ready with its failure instead of the awaited timeout.
      TestMount(
        name: "silent", arguments: ["--no-ready"],
        settings: ["required = false", "start_timeout = \"600s\""]),
    ]
    try await withDaemon(mounts) { daemon in
      #expect(try await daemon.ctl("wait-ready", "alpha").status == 0)

      let garbage = try RawClient(daemon.socketPath)
      garbage.send("this is not json\n")
      var response = try garbage.response()
      #expect(!response.ok && response.error?.code == .badRequest)
      garbage.send([0xFF, 0x00, 0xFE, 0x0A])
      #expect(try garbage.response().error?.code == .badRequest)
      garbage.send(#"{"version":1,"command":"explode"}"# + "\n")
      response = try garbage.response()
      #expect(
        response.error?.code == .badRequest
          && response.error!.message.contains("unknown command \"explode\""))
      garbage.send(#"{"version":7,"command":"status"}"# + "\n")
      #expect(try garbage.response().error?.code == .unsupportedVersion)
      garbage.send(#"{"version":1,"command":"status","names":["alpha"]}"# + "\n")
      #expect(
        try garbage.response().mounts?.first?.isReady == true, "the same connection still works")

      let oversized = try RawClient(daemon.socketPath)
      oversized.send([UInt8](repeating: UInt8(ascii: "x"), count: 100_000))
      #expect(try oversized.response().error?.code == .requestTooLong)
      #expect(try oversized.readLine() == nil, "then closed")

      // A stalled client holds nothing up and is dropped after its deadline.
      let stalled = try RawClient(daemon.socketPath)
      stalled.send(#"{"version":1,"#)
      let began = ContinuousClock.now
      let other = try RawClient(daemon.socketPath)
      other.send(#"{"version":1,"command":"status","names":["alpha"]}"# + "\n")
      #expect(try other.response().mounts?.first?.isReady == true)
      // Answered while the stalled client still waits for its 5 s deadline (unless the machine
      // is so loaded that the answer itself took that long).
      if ContinuousClock.now - began < .seconds(4) { #expect(!stalled.hasInput) }
      #expect(try stalled.response(timeout: .seconds(20)).error?.code == .clientTimeout)
      #expect(try stalled.readLine() == nil)

      // One that asks to wait and goes away.
      for _ in 0..<5 {
        let leaving = try RawClient(daemon.socketPath)
        leaving.send(#"{"version":1,"command":"wait-ready","names":["silent"]}"# + "\n")
      }
      // Pipelined requests on one connection are answered in order.
      let pipelined = try RawClient(daemon.socketPath)
      pipelined.send(
        #"{"version":1,"command":"status","names":["alpha"]}"# + "\n"
          + #"{"version":1,"command":"wait-ready","names":["silent"],"timeout_ms":50}"# + "\n"
          + #"{"version":1,"command":"logs","names":["alpha"],"lines":1}"# + "\n")
      #expect(try pipelined.response().mounts?.count == 1)
      #expect(try pipelined.response().error?.code == .timeout)
      #expect(try pipelined.response().lines?.count == 1)

      let final = try await daemon.ctl("status", "alpha")
      #expect(final.status == 0, "\(final)")
      #expect(daemon.process?.isRunning == true)
    }
  }
}

/// A listening unix socket at `path`, close-on-exec.
func listeningSocket(_ path: String) throws -> Int32 {
  try unixSocket(Int32(SOCK_STREAM.rawValue), at: path, "listen on") {
    bind($0, $1, $2) == 0 ? listen($0, 16) : -1
  }
}
