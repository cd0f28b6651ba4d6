import Foundation
import Glibc
import MountControl
import MountSupTestSupport
import Testing

@Suite("mountctl exit codes a health check can trust")
struct ExitCodeTests {
  @Test("a socket path that is a plain file or a directory: 4, and not called a stale socket")
  func notASocket() async throws {
    let daemon = try TestDaemon()
    defer { daemon.finish() }
    let file = try daemon.sandbox.write("not-a-socket", "hello\n")
    let run = try await daemon.run(["status", "--socket", file])
    #expect(run.status == 4, "\(run)")
    #expect(run.errors.contains(file) && run.errors.contains("a regular file, not a socket"))
    #expect(!run.errors.contains("stale"), "\(run)")
    let directory = try await daemon.run(["wait-ready", "--socket", daemon.directory])
    #expect(directory.status == 4 && directory.errors.contains("a directory, not a socket"))
    #expect(!directory.errors.contains("stale"), "\(directory)")

    // A socket file nobody listens on is the stale one.
    let stale = daemon.directory + "/stale.sock"
    close(try listeningSocket(stale))
    let staleRun = try await daemon.run(["status", "--socket", stale])
    #expect(staleRun.status == 4 && staleRun.errors.contains("stale"), "\(staleRun)")
  }

  @Test(
    "usage errors exit 64, before any connection",
    arguments: [
      ["status", "--bogus"], ["wait-ready", "--timeout", "soon"], ["start"], ["frobnicate"],
      ["logs", "alpha", "-n", "-3"],
    ])
  func usageErrors(_ arguments: [String]) async throws {
    let daemon = try TestDaemon()
    defer { daemon.finish() }
    let run = try await daemon.run(arguments + ["--socket", daemon.directory + "/none.sock"])
    #expect(run.status == 64, "\(arguments): \(run)")
    #expect(!run.errors.contains("cannot reach"), "\(run)")
  }

  @Test(
    "reload exits 1 when an added mount failed; wait-ready without names waits for optional ones")
  func reloadWithAFailedMount() async throws {
    try await withDaemon([TestMount(name: "alpha")]) { daemon in
      #expect(try await daemon.ctl("wait-ready").status == 0)
      let broken = TestMount(
        name: "broken", arguments: ["--fail", "backend unreachable"],
        settings: ["restart = \"never\"", "required = false"])
      try daemon.write([TestMount(name: "alpha"), broken])
      let reload = try await daemon.ctl("reload")
      #expect(reload.status == 1, "\(reload)")
      #expect(reload.output.contains("added: broken") && reload.output.contains("unchanged: alpha"))
      #expect(
        reload.errors.contains("reload applied, but broken is not ready")
          && reload.errors.contains("backend unreachable"), "\(reload)")
      #expect(try daemon.mount("alpha").isReady, "the rest of the reload stands")

      // Nothing added or changed: nothing failed.
      let again = try await daemon.ctl("reload")
      #expect(again.status == 0, "\(again)")

      // As documented: without names optional mounts count, unlike READY=1.
      #expect(try daemon.status().service?.ready == true)
      let all = try await daemon.ctl("wait-ready", "--timeout", "10s")
      #expect(all.status == 1, "\(all)")
      #expect(try await daemon.ctl("wait-ready", "alpha").status == 0)
    }
  }
}
