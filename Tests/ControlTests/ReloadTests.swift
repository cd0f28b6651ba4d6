import Foundation
import Glibc
import MountControl
import MountSupTestSupport
import Testing

@Suite("reload: mountctl reload and SIGHUP")
struct ReloadTests {
  @Test("a reload returns at an added mount's first failure, even with a long restart delay")
  func returnsAtTheFirstFailure() async throws {
    try await withDaemon([TestMount(name: "keep")]) { daemon in
      #expect(try await daemon.ctl("wait-ready").status == 0)
      try daemon.write([
        TestMount(name: "keep"),
        TestMount(
          name: "broken", arguments: ["--fail", "no backend"],
          overrides: ["restart": "\"always\"", "restart_delay": "\"30s\""]),
      ])
      let began = ContinuousClock.now
      let reload = try await daemon.ctl(["reload"], timeout: .seconds(20))
      #expect(ContinuousClock.now - began < .seconds(20))
      #expect(reload.status != 0, "an added mount failed: \(reload)")
      #expect(reload.output.contains("broken") || reload.errors.contains("broken"), "\(reload)")
      #expect(try daemon.status().service?.reloading == false)
      // The next reload is not held up behind it (and changes nothing).
      #expect(try await daemon.ctl(["reload"], timeout: .seconds(20)).status == 0)
    }
  }

  @Test("added, removed, changed and unchanged mounts, checked by pid")
  func appliesTheDiff() async throws {
    let before = [TestMount(name: "keep"), TestMount(name: "change"), TestMount(name: "drop")]
    try await withDaemon(before) { daemon in
      #expect(try await daemon.ctl("wait-ready").status == 0)
      let keep = try daemon.mount("keep")
      let change = try daemon.mount("change")
      let drop = try daemon.mount("drop")

      try daemon.write([
        TestMount(name: "keep", settings: ["start_timeout = \"20s\""]),  // not a worker field
        TestMount(name: "change", arguments: ["--status", "new config"]),
        TestMount(name: "add", arguments: ["--mount-delay", "300"]),
      ])
      let reload = try await daemon.ctl("reload")
      #expect(reload.status == 0, "\(reload)")
      #expect(
        reload.output == """
          added: add (ready)
          removed: drop
          changed: change (ready)
          unchanged: keep

          """)

      // Settled when the reload answered: no waiting here.
      let after = try #require(daemon.status().mounts)
      #expect(after.map(\.name) == ["add", "change", "keep"])
      #expect(after.allSatisfy { $0.isReady })
      let kept = try daemon.mount("keep")
      #expect(kept.pid == keep.pid && kept.restarts == 0, "unchanged: same worker, never remounted")
      let changed = try daemon.mount("change")
      #expect(changed.pid != change.pid && changed.workerStatus == "new config")
      #expect(
        kill(drop.pid!, 0) != 0 && fuseMount(at: daemon.mountpoint("drop")) == nil,
        "removed: stopped cleanly")
      #expect(kill(change.pid!, 0) != 0)
      #expect(fuseMount(at: daemon.mountpoint("add")) != nil)
      #expect(try daemon.status().service?.reloading == false)
    }
  }

  @Test("an invalid configuration changes nothing and says why")
  func invalidChangesNothing() async throws {
    try await withDaemon([TestMount(name: "alpha"), TestMount(name: "beta")]) { daemon in
      #expect(try await daemon.ctl("wait-ready").status == 0)
      let pids = try daemon.status().mounts!.map(\.pid)

      try daemon.write([
        TestMount(name: "alpha", settings: ["restart_dleay = \"1s\""]), TestMount(name: "gamma"),
      ])
      let reload = try await daemon.ctl("reload")
      #expect(reload.status == 1, "\(reload)")
      #expect(reload.errors.contains("invalid") && reload.errors.contains("nothing changed"))
      #expect(
        reload.errors.contains(daemon.configPath) && reload.errors.contains("restart_dleay"),
        "\(reload)")

      let status = try daemon.status()
      #expect(status.mounts!.map(\.name) == ["alpha", "beta"])
      #expect(status.mounts!.map(\.pid) == pids && status.mounts!.allSatisfy { $0.isReady })
      #expect(
        status.service!.status.contains("last reload failed")
          && status.service!.status.contains("restart_dleay"))
      #expect(fuseMount(at: daemon.mountpoint("gamma")) == nil)

      // SIGHUP with the same invalid file: the same, and the daemon goes on.
      kill(daemon.process!.pid, SIGHUP)
      try await waitFor("the SIGHUP reload logged") {
        daemon.log.components(separatedBy: "reload failed, nothing changed").count == 3
      }
      #expect(try daemon.status().mounts!.map(\.pid) == pids)

      try daemon.write([TestMount(name: "alpha"), TestMount(name: "beta")])
      let fixed = try await daemon.ctl("reload")
      #expect(fixed.status == 0 && fixed.output.contains("unchanged: alpha, beta"), "\(fixed)")
      #expect(try !daemon.status().service!.status.contains("reload failed"))
    }
  }

  @Test(
    "twenty SIGHUPs and concurrent reloads: coalesced, unchanged mounts untouched, one settled end")
  func burstsCoalesce() async throws {
    let before = [TestMount(name: "keep"), TestMount(name: "change")]
    try await withDaemon(before) { daemon in
      #expect(try await daemon.ctl("wait-ready").status == 0)
      let keep = try daemon.mount("keep")
      let change = try daemon.mount("change")

      try daemon.write([
        TestMount(name: "keep"),
        TestMount(name: "change", arguments: ["--mount-delay", "200"]),
        TestMount(name: "add", arguments: ["--mount-delay", "400"]),
      ])
      let pid = daemon.process!.pid
      let first = try daemon.spawnCtl(["reload"])
      for _ in 0..<20 { kill(pid, SIGHUP) }
      let concurrent = try (0..<3).map { _ in try daemon.spawnCtl(["reload"]) }
      for _ in 0..<20 { kill(pid, SIGHUP) }

      for client in [first] + concurrent {
        let status = try await client.wait(timeout: .seconds(60))
        #expect(status == 0, "\(client.output)\(client.errors)")
        #expect(client.output.contains("unchanged: ") && client.output.contains("keep"))
      }
      // A reload after the bursts is a barrier: it starts after every earlier one is done.
      let barrier = try await daemon.ctl("reload")
      #expect(
        barrier.status == 0 && barrier.output.contains("unchanged: add, change, keep"), "\(barrier)"
      )

      let status = try daemon.status()
      #expect(status.service?.reloading == false)
      #expect(status.mounts!.allSatisfy { $0.isReady }, "\(status.mounts!)")
      let kept = try daemon.mount("keep")
      #expect(kept.pid == keep.pid && kept.restarts == 0, "unchanged through every reload")
      let changed = try daemon.mount("change")
      #expect(
        changed.pid != change.pid && changed.restarts == 0,
        "changed and restarted, which is no automatic restart")
      #expect(try daemon.mount("add").restarts == 0, "added once, started once")
      // Never concurrent: every reload settled before the next began.
      let log = daemon.log
      #expect(
        log.components(separatedBy: "reloaded:").count
          == log.components(separatedBy: "reload settled:").count,
        "\(log)")
    }
  }

  @Test(
    "RELOADING=1 with MONOTONIC_USEC, READY=1 once settled; an invalid reload too, its error in STATUS"
  )
  func tellsTheServiceManager() async throws {
    let daemon = try TestDaemon()
    defer { daemon.finish() }
    let notify = try NotifyReceiver(in: daemon.sandbox)
    try daemon.write([TestMount(name: "alpha")])
    try await daemon.start(notify: notify)
    try await waitFor("READY=1") { notify.drain().contains { $0.text.contains("READY=1") } }
    let before = notify.drain().count

    try daemon.write([
      TestMount(name: "alpha"), TestMount(name: "slow", arguments: ["--mount-delay", "300"]),
    ])
    #expect(try await daemon.ctl("reload").status == 0)
    // Sent before the answer, but a full receive queue holds it back until the test reads.
    try await waitFor("READY=1 after the reload") {
      notify.drain().dropFirst(before).contains { $0.text.hasPrefix("READY=1") }
    }
    var reload = notify.drain().dropFirst(before).map(\.text)
    let reloading = try #require(
      reload.firstIndex { $0.hasPrefix("RELOADING=1\nMONOTONIC_USEC=") }, "\(reload)")
    let ready = try #require(reload.firstIndex { $0.hasPrefix("READY=1") }, "\(reload)")
    #expect(reloading < ready)
    #expect(
      reload[ready].contains("STATUS=2/2 mounts ready"), "READY=1 once the added mount is ready")
    #expect(reload.filter { $0.contains("READY=1") }.count == 1)

    try daemon.write([TestMount(name: "alpha", settings: ["bogus = 1"])])
    #expect(try await daemon.ctl("reload").status == 1)
    let after = notify.messages.count
    reload = notify.drain().dropFirst(after).map(\.text)
    let failedReady = try #require(reload.firstIndex { $0.hasPrefix("READY=1") }, "\(reload)")
    let again = try #require(reload.firstIndex { $0.hasPrefix("RELOADING=1") }, "\(reload)")
    #expect(again < failedReady)
    #expect(
      reload[failedReady].contains("last reload failed") && reload[failedReady].contains("bogus"))
  }

  @Test("an operator's plain umount is a failure: on-failure remounts, never stays failed")
  func operatorUmount() async throws {
    let mounts = [
      TestMount(name: "again"),
      TestMount(name: "once", settings: ["restart = \"never\"", "required = false"]),
    ]
    try await withDaemon(mounts) { daemon in
      #expect(try await daemon.ctl("wait-ready").status == 0)
      let again = try daemon.mount("again")
      #expect(umount2(daemon.mountpoint("again"), 0) == 0)
      #expect(umount2(daemon.mountpoint("once"), 0) == 0)

      try await waitFor("again remounted by a new worker") {
        let now = try daemon.mount("again")
        return now.isReady && now.pid != again.pid
      }
      let remounted = try daemon.mount("again")
      #expect(remounted.restarts == 1)
      #expect(
        remounted.lastError?.contains("disappeared while the worker ran") == true, "\(remounted)")
      #expect(fuseMount(at: daemon.mountpoint("again")) != nil)
      #expect(kill(again.pid!, 0) != 0)

      try await waitFor("once failed") { try daemon.mount("once").state == "failed" }
      let once = try daemon.mount("once")
      #expect(once.lastError?.contains("disappeared while the worker ran") == true, "\(once)")
      #expect(fuseMount(at: daemon.mountpoint("once")) == nil)
      let start = try await daemon.ctl("start", "once")
      #expect(start.status == 0, "an operator brings it back: \(start)")
    }
  }
}
