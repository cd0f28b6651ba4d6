import MountConfig
import Testing

@testable import MountCore

@Suite("SupervisorCore: apply(specs:) for reload")
struct SupervisorReloadTests {
  /// Two ready mounts, READY announced.
  func readyPair() -> CoreHarness {
    var harness = CoreHarness([makeSpec("a"), makeSpec("b")])
    harness.begin()
    harness.makeReady("a", pid: 1)
    harness.makeReady("b", pid: 2)
    #expect(harness.core.readyAnnounced)
    return harness
  }

  @Test("unchanged mounts are left alone, even when knobs that only matter after an exit change")
  func unchanged() {
    var harness = readyPair()
    var b = makeSpec("b", restartDelay: .seconds(2), startLimitBurst: 9)
    b.sourceFile = "/etc/mountsup/mounts.d/b.toml"
    let before = (harness.machine("a").phase, harness.machine("b").phase)
    let (summary, effects) = harness.core.apply(specs: [makeSpec("a"), b], now: harness.now)
    #expect(summary == .init(unchanged: ["a", "b"]))
    #expect(effects == [])
    #expect(harness.machine("a").phase == before.0)
    #expect(harness.machine("b").phase == before.1)
    #expect(harness.machine("b").spec == b, "the new knobs apply from the next exit on")
  }

  @Test("an added mount starts")
  func added() {
    var harness = readyPair()
    let (summary, effects) = harness.core.apply(
      specs: [makeSpec("a"), makeSpec("b"), makeSpec("c")], now: harness.now)
    #expect(summary == .init(added: ["c"], unchanged: ["a", "b"]))
    #expect(
      effects.actions == [
        .mount(
          "c", .inspectMountpoint(attempt: 1, mountpoint: harness.machine("c").spec.mountpoint))
      ])
    #expect(harness.core.statusLine == "2/3 mounts ready; c: starting")
    #expect(harness.makeReady("c", pid: 3).service == [], "READY was said already")
  }

  @Test("an added nested mount waits for its parent")
  func addedNested() {
    var harness = CoreHarness([
      makeSpec("p", mountpoint: "/mnt/p"), makeSpec("q", mountpoint: "/mnt/q"),
    ])
    harness.begin()
    harness.makeReady("p", pid: 1)
    let specs = [
      makeSpec("p", mountpoint: "/mnt/p"), makeSpec("q", mountpoint: "/mnt/q"),
      makeSpec("pc", mountpoint: "/mnt/p/c"), makeSpec("qc", mountpoint: "/mnt/q/c"),
    ]
    let (summary, effects) = harness.core.apply(specs: specs, now: harness.now)
    #expect(summary.added.sorted() == ["pc", "qc"])
    #expect(
      effects.actions == [
        .mount(
          "pc", .inspectMountpoint(attempt: 1, mountpoint: harness.machine("pc").spec.mountpoint))
      ])
    #expect(harness.core.parent(of: "qc") == "q")
    #expect(
      harness.makeReady("q", pid: 2).actions(for: "qc") == [
        .inspectMountpoint(attempt: 1, mountpoint: harness.machine("qc").spec.mountpoint)
      ])
  }

  @Test("a removed mount is stopped and forgotten once its worker is gone")
  func removed() {
    var harness = readyPair()
    let (summary, effects) = harness.core.apply(specs: [makeSpec("a")], now: harness.now)
    #expect(summary == .init(removed: ["b"], unchanged: ["a"]))
    #expect(effects.actions == [.mount("b", .unmount)])
    #expect(harness.core.machines["b"] != nil, "kept until the worker exited")
    #expect(harness.core.statusLine == "1/1 mounts ready")
    let exited = harness.exit("b")
    #expect(exited.actions == [.mount("b", .detachMount)])
    #expect(harness.core.machines["b"] == nil)
    #expect(harness.core.order == ["a"])
    #expect(harness.send(.mountAppeared, to: "b") == [])
  }

  @Test("a removed mount without a worker is forgotten at once")
  func removedSettled() {
    var harness = CoreHarness([makeSpec("a"), makeSpec("b", restart: .never, required: false)])
    harness.begin()
    harness.runWorker("b", pid: 2)
    harness.exit("b", .exited(1))
    #expect(harness.machine("b").isFailed)
    let (summary, effects) = harness.core.apply(specs: [makeSpec("a")], now: harness.now)
    #expect(summary.removed == ["b"])
    #expect(effects.actions == [])
    #expect(harness.core.machines["b"] == nil)
    #expect(harness.core.order == ["a"])
  }

  @Test("a changed mount is restarted with its new spec")
  func changed() {
    var harness = readyPair()
    let newA = makeSpec("a", command: ["mountsup-testworker", "--new", "/mnt/a"])
    let (summary, effects) = harness.core.apply(specs: [newA, makeSpec("b")], now: harness.now)
    #expect(summary == .init(changed: ["a"], unchanged: ["b"]))
    #expect(effects.actions == [.mount("a", .unmount)])
    #expect(harness.machine("a").spec == newA)
    #expect(
      harness.exit("a").actions == [
        .mount("a", .detachMount),
        .mount(
          "a", .inspectMountpoint(attempt: 2, mountpoint: harness.machine("a").spec.mountpoint)),
      ])
    #expect(harness.makeReady("a", pid: 3).service == [])
  }

  @Test(
    "every field a running worker depends on makes a change",
    arguments: ["mountpoint", "command", "readiness", "probePath", "user", "group", "environment"])
  func changedFields(field: String) {
    var harness = readyPair()
    var newB = makeSpec("b")
    switch field {
    case "mountpoint": newB.mountpoint = "/mnt/b2"
    case "command": newB.command = ["other"]
    case "readiness": newB.readiness = .notify
    case "probePath": newB.probePath = "sub"
    case "user": newB.user = "alice"
    case "group": newB.group = "alice"
    default: newB.environment = ["X": "1"]
    }
    let (summary, effects) = harness.core.apply(specs: [makeSpec("a"), newB], now: harness.now)
    #expect(summary.changed == ["b"])
    #expect(effects.actions == [.mount("b", .unmount)])
  }

  @Test("a changed mount that had failed is started again at once")
  func changedFailed() {
    var harness = CoreHarness([makeSpec("a"), makeSpec("b", restart: .never, required: false)])
    harness.begin()
    harness.runWorker("b", pid: 2)
    harness.exit("b", .exited(1))
    let newB = makeSpec("b", command: ["fixed"], restart: .never, required: false)
    let (summary, effects) = harness.core.apply(specs: [makeSpec("a"), newB], now: harness.now)
    #expect(summary.changed == ["b"])
    #expect(
      effects.actions == [
        .mount(
          "b", .inspectMountpoint(attempt: 2, mountpoint: harness.machine("b").spec.mountpoint))
      ])
  }

  @Test("a changed mount waiting out its backoff starts again at once")
  func changedInBackoff() {
    var harness = CoreHarness([makeSpec("a")])
    harness.begin()
    harness.runWorker("a", pid: 1)
    harness.exit("a", .exited(1))
    let (_, effects) = harness.core.apply(
      specs: [makeSpec("a", command: ["fixed"])], now: harness.now)
    #expect(
      effects.actions == [
        .mount(
          "a", .inspectMountpoint(attempt: 2, mountpoint: harness.machine("a").spec.mountpoint))
      ])
  }

  @Test("added, removed, changed and unchanged in one reload: the unchanged mount gets no effect")
  func allFour() {
    var harness = CoreHarness([makeSpec("keep"), makeSpec("change"), makeSpec("drop")])
    harness.begin()
    harness.makeReady("keep", pid: 1)
    harness.makeReady("change", pid: 2)
    harness.makeReady("drop", pid: 3)
    let (summary, effects) = harness.core.apply(
      specs: [makeSpec("keep"), makeSpec("change", command: ["v2"]), makeSpec("add")],
      now: harness.now)
    #expect(
      summary == .init(added: ["add"], removed: ["drop"], changed: ["change"], unchanged: ["keep"]))
    #expect(effects.touchedMounts == ["change", "drop", "add"])
    #expect(!effects.contains { if case .mount("keep", _) = $0 { true } else { false } })
    #expect(effects.service == [])
    #expect(harness.machine("keep").phase == .ready(pid: 1, since: origin))
  }

  @Test("a mount added back while its removal is under way is started again after its exit")
  func readdedDuringRemoval() {
    var harness = readyPair()
    _ = harness.core.apply(specs: [makeSpec("a")], now: harness.now)
    let (summary, effects) = harness.core.apply(
      specs: [makeSpec("a"), makeSpec("b")], now: harness.now)
    #expect(summary.added == ["b"])
    #expect(summary.removed == [])
    #expect(effects.actions == [])
    #expect(
      harness.exit("b").actions == [
        .mount("b", .detachMount),
        .mount(
          "b", .inspectMountpoint(attempt: 2, mountpoint: harness.machine("b").spec.mountpoint)),
      ])
    #expect(harness.core.machines["b"] != nil)
  }

  @Test("a removed required mount no longer holds READY")
  func removedRequiredReleasesReady() {
    var harness = CoreHarness([makeSpec("a"), makeSpec("b")])
    harness.begin()
    harness.makeReady("a", pid: 1)
    harness.runWorker("b", pid: 2)
    let (_, effects) = harness.core.apply(specs: [makeSpec("a")], now: harness.now)
    #expect(effects.actions(for: "b") == [.cancelProbe, .signal(15)])
    #expect(effects.service == [.announceReady])
  }

  @Test("removing a failed parent lets its nested mount start on its own")
  func removedParentReleasesChild() {
    var harness = CoreHarness([
      makeSpec("p", mountpoint: "/mnt/p", restart: .never, required: false),
      makeSpec("c", mountpoint: "/mnt/p/c", required: false),
    ])
    harness.begin()
    harness.runWorker("p", pid: 1)
    harness.exit("p", .exited(1))
    #expect(harness.machine("c").phase == .inactive)
    let (summary, effects) = harness.core.apply(
      specs: [makeSpec("c", mountpoint: "/mnt/p/c", required: false)], now: harness.now)
    #expect(summary.removed == ["p"])
    #expect(harness.core.parent(of: "c") == nil)
    #expect(
      effects.actions == [
        .mount(
          "c", .inspectMountpoint(attempt: 1, mountpoint: harness.machine("c").spec.mountpoint))
      ])
  }

  @Test("removing a running parent stops its nested mount first; the child then runs on its own")
  func removedRunningParent() {
    var harness = CoreHarness([
      makeSpec("p", mountpoint: "/mnt/p"), makeSpec("c", mountpoint: "/mnt/p/c"),
    ])
    harness.begin()
    harness.makeReady("p", pid: 1)
    harness.makeReady("c", pid: 2)
    let (summary, effects) = harness.core.apply(
      specs: [makeSpec("c", mountpoint: "/mnt/p/c")], now: harness.now)
    #expect(summary.removed == ["p"])
    #expect(effects.actions == [.mount("c", .unmount)])
    #expect(harness.exit("c").actions == [.mount("c", .detachMount), .mount("p", .unmount)])
    #expect(
      harness.exit("p").actions == [
        .mount("p", .detachMount),
        .mount(
          "c", .inspectMountpoint(attempt: 2, mountpoint: harness.machine("c").spec.mountpoint)),
      ])
    #expect(harness.core.machines["p"] == nil)
  }

  @Test("a changed parent is restarted only after its nested mounts are down")
  func changedParent() {
    var harness = CoreHarness([
      makeSpec("p", mountpoint: "/mnt/p"), makeSpec("c", mountpoint: "/mnt/p/c"),
    ])
    harness.begin()
    harness.makeReady("p", pid: 1)
    harness.makeReady("c", pid: 2)
    let newP = makeSpec("p", mountpoint: "/mnt/p", command: ["v2", "/mnt/p"])
    let (summary, effects) = harness.core.apply(
      specs: [newP, makeSpec("c", mountpoint: "/mnt/p/c")], now: harness.now)
    #expect(summary == .init(changed: ["p"], unchanged: ["c"]))
    #expect(effects.actions == [.mount("c", .unmount)])
    #expect(harness.exit("c").actions == [.mount("c", .detachMount), .mount("p", .unmount)])
    #expect(
      harness.exit("p").actions == [
        .mount("p", .detachMount),
        .mount(
          "p", .inspectMountpoint(attempt: 2, mountpoint: harness.machine("p").spec.mountpoint)),
      ])
    #expect(harness.machine("p").spec == newP)
    #expect(
      harness.makeReady("p", pid: 3).actions(for: "c") == [
        .inspectMountpoint(attempt: 2, mountpoint: harness.machine("c").spec.mountpoint)
      ])
  }
}

@Suite("SupervisorCore: a mountpoint handed from one mount to another in a reload")
struct MountpointHandOverTests {
  @Test("a renamed mount starts only once the old name has left the mountpoint")
  func renameWaitsForTheOldMount() {
    var harness = CoreHarness([makeSpec("zeta", mountpoint: "/mnt/data")])
    harness.begin()
    harness.makeReady("zeta", pid: 1)
    let (summary, effects) = harness.core.apply(
      specs: [makeSpec("alpha", mountpoint: "/mnt/data")], now: harness.now)
    #expect(summary.added == ["alpha"] && summary.removed == ["zeta"])
    #expect(effects.actions(for: "alpha") == [], "the old mount is still there")
    #expect(effects.actions(for: "zeta") == [.unmount])
    #expect(harness.core.detail(of: "alpha").contains("waiting for the removed mount zeta"))
    let gone = harness.exit("zeta")
    #expect(
      gone.actions(for: "alpha") == [
        .inspectMountpoint(attempt: 1, mountpoint: "/mnt/data")
      ])
  }
}
