import MountConfig
import Testing

@testable import MountCore

@Suite("SupervisorCore: READY, service failure, nesting, shutdown, operator")
struct SupervisorCoreTests {
  // MARK: Topology

  @Test("the parent is the nearest managed mount whose mountpoint contains the mount's")
  func topology() {
    let core = SupervisorCore(specs: [
      makeSpec("deep", mountpoint: "/data/x/y/z"),
      makeSpec("top", mountpoint: "/data"),
      makeSpec("mid", mountpoint: "/data/x"),
      makeSpec("other", mountpoint: "/data2"),
      makeSpec("sibling", mountpoint: "/data/xy"),
    ])
    #expect(core.parent(of: "top") == nil)
    #expect(core.parent(of: "other") == nil, "/data2 is not inside /data")
    #expect(core.parent(of: "mid") == "top")
    #expect(core.parent(of: "sibling") == "top", "/data/xy is not inside /data/x")
    #expect(core.parent(of: "deep") == "mid")
    #expect(core.order == ["other", "top", "mid", "sibling", "deep"])
  }

  // MARK: Parent-first start

  @Test("begin starts the top-level mounts; nested ones wait for their parent")
  func beginStartsTopLevel() {
    var harness = CoreHarness([
      makeSpec("p", mountpoint: "/mnt/p"), makeSpec("c", mountpoint: "/mnt/p/c"),
      makeSpec("x", mountpoint: "/mnt/x"),
    ])
    let effects = harness.begin()
    #expect(
      effects.actions == [
        .mount(
          "p", .inspectMountpoint(attempt: 1, mountpoint: harness.machine("p").spec.mountpoint)),
        .mount(
          "x", .inspectMountpoint(attempt: 1, mountpoint: harness.machine("x").spec.mountpoint)),
      ])
    #expect(harness.machine("c").phase == .inactive)
    #expect(
      harness.core.statusLine == "0/3 mounts ready; p: starting; x: starting; c: waiting for p")
  }

  @Test("nested mounts start parent-first, one level per confirmed parent")
  func parentFirstStart() {
    var harness = CoreHarness([
      makeSpec("g", mountpoint: "/mnt/p/c/g"), makeSpec("c", mountpoint: "/mnt/p/c"),
      makeSpec("p", mountpoint: "/mnt/p"),
    ])
    #expect(
      harness.begin().actions == [
        .mount(
          "p", .inspectMountpoint(attempt: 1, mountpoint: harness.machine("p").spec.mountpoint))
      ])

    let afterP = harness.makeReady("p", pid: 1)
    #expect(
      afterP.actions(for: "c") == [
        .inspectMountpoint(attempt: 1, mountpoint: harness.machine("c").spec.mountpoint)
      ])
    #expect(afterP.actions(for: "g") == [])
    #expect(!afterP.announcesReady)

    // The parent's READY alone (before its mount shows) does not start the child.
    var slow = CoreHarness([
      makeSpec("p", mountpoint: "/mnt/p"), makeSpec("c", mountpoint: "/mnt/p/c"),
    ])
    slow.begin()
    slow.runWorker("p", pid: 1)
    #expect(slow.send(.message(readyMessage), to: "p").actions(for: "c") == [])
    #expect(
      slow.send(.mountAppeared, to: "p").actions(for: "c") == [
        .inspectMountpoint(attempt: 1, mountpoint: harness.machine("c").spec.mountpoint)
      ])

    let afterC = harness.makeReady("c", pid: 2)
    #expect(
      afterC.actions(for: "g") == [
        .inspectMountpoint(attempt: 1, mountpoint: harness.machine("g").spec.mountpoint)
      ])
    #expect(!afterC.announcesReady)

    #expect(harness.makeReady("g", pid: 3).service == [.announceReady])
  }

  @Test("a parent that crashes takes its children down; they start again after it")
  func parentCrash() {
    var harness = CoreHarness([
      makeSpec("p", mountpoint: "/mnt/p"), makeSpec("c", mountpoint: "/mnt/p/c"),
    ])
    harness.begin()
    harness.makeReady("p", pid: 1)
    harness.makeReady("c", pid: 2)
    harness.advance(.seconds(30))
    let crash = harness.exit("p", .signaled(9))
    #expect(crash.actions(for: "p") == [.detachMount])
    #expect(crash.actions(for: "c") == [.unmount])
    #expect(harness.machine("p").isInBackoff)
    #expect(crash.service == [], "READY stays")
    harness.exit("c", .exited(0))
    #expect(harness.machine("c").phase == .inactive)
    #expect(
      harness.fireTimers().actions == [
        .mount(
          "p", .inspectMountpoint(attempt: 2, mountpoint: harness.machine("p").spec.mountpoint))
      ])
    let again = harness.makeReady("p", pid: 3)
    #expect(
      again.actions(for: "c") == [
        .inspectMountpoint(attempt: 2, mountpoint: harness.machine("c").spec.mountpoint)
      ])
    #expect(!again.announcesReady)
  }

  // MARK: READY

  @Test("READY exactly once, when the last required mount is confirmed")
  func readyOnce() {
    var harness = CoreHarness([
      makeSpec("a", restart: .always, startLimitBurst: 100), makeSpec("b"),
      makeSpec("c", required: false),
    ])
    var all = harness.begin()
    all += harness.makeReady("a", pid: 1)
    #expect(!all.announcesReady)
    #expect(!harness.core.readyAnnounced)
    #expect(!harness.core.requiredMountsReady)

    all += harness.runWorker("b", pid: 2)
    let readyWord = harness.send(.message(readyMessage), to: "b")
    #expect(!readyWord.announcesReady, "the worker's word alone is not a confirmed mount")
    let confirmed = harness.send(.mountAppeared, to: "b")
    #expect(confirmed.service == [.announceReady])
    #expect(harness.core.readyAnnounced)
    #expect(harness.core.requiredMountsReady)
    all += readyWord + confirmed

    all += harness.makeReady("c", pid: 3)
    for round in 0..<3 {
      harness.advance(.seconds(20))
      all += harness.exit("a", round == 0 ? .exited(0) : .signaled(9))
      all += harness.fireTimers()
      all += harness.makeReady("a", pid: Int32(10 + round))
    }
    #expect(all.filter { $0 == .announceReady }.count == 1)
    #expect(all.failures.isEmpty)
    #expect(all.exitCodes.isEmpty)
  }

  @Test("a mount list of optional mounts only is READY at once")
  func onlyOptional() {
    var harness = CoreHarness([makeSpec("a", required: false), makeSpec("b", required: false)])
    let effects = harness.begin()
    #expect(effects.service == [.announceReady])
    #expect(
      effects.actions(for: "a") == [
        .inspectMountpoint(attempt: 1, mountpoint: harness.machine("a").spec.mountpoint)
      ])
  }

  @Test("no mounts at all: READY at begin, exit 0 at shutdown")
  func noMounts() {
    var harness = CoreHarness([])
    #expect(harness.begin() == [.announceReady])
    #expect(harness.core.statusLine == "0/0 mounts ready")
    #expect(harness.core.shutdown(now: harness.now) == [.exit(code: 0)])
  }

  @Test("an optional mount still starting does not hold READY")
  func optionalStartingDoesNotHoldReady() {
    var harness = CoreHarness([makeSpec("a"), makeSpec("slow", required: false)])
    harness.begin()
    harness.runWorker("slow", pid: 2)
    #expect(harness.makeReady("a", pid: 1).service == [.announceReady])
    #expect(harness.core.statusLine == "1/2 mounts ready; slow: starting")
  }

  @Test("an optional mount that fails neither fails the service nor holds READY")
  func optionalFailure() {
    var harness = CoreHarness([makeSpec("a"), makeSpec("b", restart: .never, required: false)])
    harness.begin()
    harness.runWorker("b", pid: 2)
    let failed = harness.exit("b", .exited(1), outputTail: ["b: cannot mount"])
    #expect(failed.service == [])
    #expect(harness.machine("b").isFailed)
    #expect(harness.core.serviceFailure == nil)
    #expect(!harness.core.shuttingDown)
    #expect(harness.makeReady("a", pid: 1).service == [.announceReady])
    #expect(harness.core.statusLine.hasPrefix("1/2 mounts ready; b: failed: "))
    #expect(harness.core.statusLine.hasSuffix("b: cannot mount"))
  }

  // MARK: Service failure before READY

  @Test("the only required mount fails before READY: announceFailure, then exit 1")
  func singleRequiredFailure() throws {
    var harness = CoreHarness([makeSpec("a", restart: .never)])
    harness.begin()
    harness.runWorker("a", pid: 1)
    harness.send(.message(datagram("ERROR=share //nas/photos not found\nERRNO=2")), to: "a")
    let effects = harness.exit("a", .exited(1), outputTail: ["mount error(2)"])
    let failure = try #require(harness.machine("a").failure)
    #expect(failure.workerError == "share //nas/photos not found")
    #expect(failure.errno == 2)
    #expect(effects.service == [.announceFailure(mount: "a", failure), .exit(code: 1)])
    #expect(harness.core.serviceFailure?.mount == "a")
    #expect(harness.core.serviceFailure?.failure == failure)
    #expect(harness.core.statusLine == "failed: a: \(failure)")
    #expect(!harness.core.readyAnnounced)
  }

  @Test(
    "a required mount that exhausts its start limit before READY fails the service with its words")
  func startLimitFailsService() throws {
    var harness = CoreHarness([makeSpec("a", startLimitBurst: 2), makeSpec("b")])
    var all = harness.begin()
    all += harness.runWorker("a", pid: 1)
    all += harness.exit("a", .exited(1), outputTail: ["bad credentials"])
    #expect(all.failures.isEmpty, "one failed attempt is no reason to give up")
    all += harness.fireTimers()
    all += harness.runWorker("a", pid: 2)
    let effects = harness.exit("a", .exited(1), outputTail: ["bad credentials for alice"])
    let reported = try #require(effects.failures.first)
    #expect(reported.mount == "a")
    #expect(reported.failure.summary.contains("start limit"))
    #expect(reported.failure.workerError == "bad credentials for alice")
    #expect(reported.failure.outputTail == ["bad credentials for alice"])
    #expect(!(all + effects).announcesReady)
  }

  @Test("a required failure before READY stops every other mount, then exits 1")
  func requiredFailureStopsEverything() {
    var harness = CoreHarness([
      makeSpec("a", restart: .never),
      makeSpec("b", stopTimeout: .seconds(4)),
      makeSpec("c", stopTimeout: .seconds(4)),
      makeSpec("d"),
      makeSpec("e", required: false, stopTimeout: .seconds(4)),
    ])
    harness.begin()
    harness.makeReady("b", pid: 2)
    harness.runWorker("c", pid: 3)
    harness.runWorker("d", pid: 4)
    harness.exit("d", .exited(1))
    #expect(harness.machine("d").isInBackoff)
    harness.makeReady("e", pid: 5)
    harness.runWorker("a", pid: 1)

    harness.advance(.seconds(5))
    let failedAt = harness.now
    let effects = harness.exit("a", .exited(1), outputTail: ["boom"])
    #expect(effects.service.first == .announceFailure(mount: "a", harness.machine("a").failure!))
    #expect(effects.failures.count == 1)
    #expect(effects.actions(for: "b") == [.unmount])
    #expect(effects.actions(for: "c") == [.cancelProbe, .signal(15)])
    #expect(effects.actions(for: "d") == [])
    #expect(effects.actions(for: "e") == [.unmount])
    #expect(harness.machine("d").phase == .inactive)
    #expect(effects.exitCodes.isEmpty, "workers still run")
    #expect(harness.core.shuttingDown)
    // The stops run on the real clock: stop_timeout counts from the failure.
    #expect(harness.machine("b").deadline == failedAt + .seconds(4))
    #expect(harness.machine("c").deadline == failedAt + .seconds(4))
    #expect(harness.machine("e").deadline == failedAt + .seconds(4))
    #expect(harness.core.nextDeadline == failedAt + .seconds(4))

    var rest = harness.exit("b")
    rest += harness.exit("c", .signaled(15))
    #expect(rest.exitCodes.isEmpty)
    let last = harness.exit("e")
    #expect(last.service == [.exit(code: 1)])
    #expect(!(effects + rest + last).announcesReady)
    // Nothing restarts afterwards, and the exit is not repeated.
    harness.advance(.seconds(60))
    #expect(harness.core.timerFired(now: harness.now).service == [])
    #expect(harness.core.nextDeadline == nil)
  }

  @Test("a required mount blocked by a failed parent fails the service, naming the parent")
  func failedParentBlocksRequiredChild() throws {
    var harness = CoreHarness([
      makeSpec("p", mountpoint: "/mnt/p", restart: .never, required: false),
      makeSpec("c", mountpoint: "/mnt/p/c"),
    ])
    harness.begin()
    harness.runWorker("p", pid: 1)
    let effects = harness.exit("p", .exited(1), outputTail: ["p is broken"])
    let reported = try #require(effects.failures.first)
    #expect(reported.mount == "c")
    #expect(reported.failure.summary.contains("p"))
    #expect(reported.failure.description.contains("p is broken"))
    #expect(effects.exitCodes == [1], "nothing runs any more")
  }

  @Test("a required mount that exits for good before READY fails the service")
  func requiredExitedBeforeReady() {
    var harness = CoreHarness([makeSpec("a"), makeSpec("b")])
    harness.begin()
    harness.makeReady("a", pid: 1)
    harness.runWorker("b", pid: 2)
    harness.advance(.seconds(1))
    let effects = harness.exit("a", .exited(0))
    #expect(harness.machine("a").phase == .exited(.exited(0)))
    #expect(effects.failures.map(\.mount) == ["a"])
    #expect(effects.actions(for: "b") == [.cancelProbe, .signal(15)])
    #expect(harness.exit("b", .signaled(15)).service == [.exit(code: 1)])
  }

  // MARK: After READY

  @Test("a crash after READY never withdraws READY: the mount is restarted")
  func crashAfterReady() {
    var harness = CoreHarness([makeSpec("a"), makeSpec("b")])
    harness.begin()
    harness.makeReady("a", pid: 1)
    harness.makeReady("b", pid: 2)
    #expect(harness.core.readyAnnounced)
    harness.advance(.seconds(60))
    let crash = harness.exit("a", .signaled(9), outputTail: ["killed"])
    #expect(crash.service == [])
    #expect(crash.actions(for: "a") == [.detachMount])
    #expect(harness.machine("a").isInBackoff)
    #expect(harness.core.readyAnnounced)
    #expect(!harness.core.shuttingDown)
    #expect(harness.core.statusLine.hasPrefix("1/2 mounts ready; a: restarting after: "))
    #expect(
      harness.fireTimers().actions == [
        .mount(
          "a", .inspectMountpoint(attempt: 2, mountpoint: harness.machine("a").spec.mountpoint))
      ])
    #expect(harness.makeReady("a", pid: 3).service == [])
    #expect(harness.core.statusLine == "2/2 mounts ready")
  }

  @Test("a required mount that gives up after READY only fails itself")
  func failureAfterReady() {
    var harness = CoreHarness([makeSpec("a", startLimitBurst: 2), makeSpec("b")])
    harness.begin()
    harness.makeReady("a", pid: 1)
    harness.makeReady("b", pid: 2)
    var all = harness.exit("a", .signaled(11))
    all += harness.fireTimers()
    all += harness.runWorker("a", pid: 3)
    all += harness.exit("a", .exited(1), outputTail: ["gave up"])
    #expect(harness.machine("a").isFailed)
    #expect(all.service == [])
    #expect(harness.core.serviceFailure == nil)
    #expect(!harness.core.shuttingDown)
    #expect(harness.core.statusLine.hasPrefix("1/2 mounts ready; a: failed: start limit"))
  }

  // MARK: Shutdown

  @Test("shutdown stops children before parents and exits 0 once all are gone")
  func shutdownChildFirst() {
    var harness = CoreHarness([
      makeSpec("p", mountpoint: "/mnt/p"), makeSpec("c", mountpoint: "/mnt/p/c"),
      makeSpec("g", mountpoint: "/mnt/p/c/g"), makeSpec("x", mountpoint: "/mnt/x"),
    ])
    harness.begin()
    harness.makeReady("p", pid: 1)
    harness.makeReady("x", pid: 4)
    harness.makeReady("c", pid: 2)
    harness.makeReady("g", pid: 3)

    let stop = harness.core.shutdown(now: harness.now)
    #expect(stop.actions == [.mount("x", .unmount), .mount("g", .unmount)])
    #expect(harness.core.statusLine == "stopping: 4 of 4 mounts still up")

    #expect(harness.exit("g").actions == [.mount("g", .detachMount), .mount("c", .unmount)])
    #expect(harness.exit("c").actions == [.mount("c", .detachMount), .mount("p", .unmount)])
    #expect(harness.exit("x").actions == [.mount("x", .detachMount)])
    #expect(harness.core.statusLine == "stopping: 1 of 4 mounts still up")
    #expect(harness.exit("p").actions == [.mount("p", .detachMount), .exit(code: 0)])
    #expect(harness.core.statusLine == "stopped")

    harness.advance(.seconds(30))
    #expect(harness.core.timerFired(now: harness.now) == [])
    #expect(harness.exit("p") == [], "the exit is announced once")
    #expect(harness.core.shutdown(now: harness.now) == [])
  }

  @Test("shutdown: a hung worker is escalated by the timer, then the daemon exits 0")
  func shutdownEscalates() {
    var harness = CoreHarness([makeSpec("a", stopTimeout: .seconds(2))])
    harness.begin()
    harness.makeReady("a", pid: 1)
    #expect(harness.core.shutdown(now: harness.now).actions == [.mount("a", .unmount)])
    #expect(harness.fireTimers().actions == [.mount("a", .signal(15))])
    #expect(harness.fireTimers().actions == [.mount("a", .signal(9)), .mount("a", .detachMount)])
    #expect(harness.core.nextDeadline == nil)
    #expect(harness.exit("a", .signaled(9)).service == [.exit(code: 0)])
  }

  @Test("shutdown ends mounts without a worker at once and signals starting ones")
  func shutdownMixedPhases() {
    var harness = CoreHarness([
      makeSpec("backoff"), makeSpec("preparing"), makeSpec("starting"),
      makeSpec("waiting", mountpoint: "/mnt/starting/inner"),
    ])
    harness.begin()
    harness.runWorker("backoff", pid: 1)
    harness.exit("backoff", .exited(1))
    harness.runWorker("starting", pid: 3)
    let effects = harness.core.shutdown(now: harness.now)
    #expect(effects.actions == [.mount("starting", .cancelProbe), .mount("starting", .signal(15))])
    #expect(harness.machine("backoff").phase == .inactive)
    #expect(harness.machine("preparing").phase == .inactive)
    #expect(harness.machine("waiting").phase == .inactive)
    #expect(harness.exit("starting", .signaled(15)).service == [.exit(code: 0)])
    #expect(harness.core.serviceFailure == nil)
  }

  @Test("shutdown before READY exits 0 and never says READY")
  func shutdownBeforeReady() {
    var harness = CoreHarness([makeSpec("a"), makeSpec("b")])
    var all = harness.begin()
    all += harness.makeReady("a", pid: 1)
    all += harness.core.shutdown(now: harness.now)
    all += harness.exit("a")
    #expect(all.service == [.exit(code: 0)])
    // b's late prepare answer and the later mount of the other worker change nothing.
    #expect(harness.send(.prepared(attempt: 1), to: "b") == [])
    #expect(harness.core.startupDeadline == nil)
  }

  @Test("shutdown while a failed worker is being aborted: no restart afterwards")
  func shutdownDuringRetry() {
    var harness = CoreHarness([makeSpec("a")])
    harness.begin()
    harness.makeReady("a", pid: 1)
    harness.send(.mountVanished, to: "a")
    #expect(harness.core.shutdown(now: harness.now).service == [])
    let effects = harness.exit("a", .signaled(15))
    #expect(effects.actions == [.mount("a", .detachMount), .exit(code: 0)])
    #expect(harness.machine("a").phase == .inactive)
  }

  @Test("events for unknown mounts are ignored")
  func unknownMount() {
    var harness = CoreHarness([makeSpec("a")])
    harness.begin()
    #expect(harness.send(.mountAppeared, to: "nope") == [])
    #expect(harness.core.operatorStop("nope", now: harness.now) == [])
    #expect(harness.core.operatorStart("nope", now: harness.now) == [])
    #expect(harness.core.operatorRestart("nope", now: harness.now) == [])
    #expect(harness.core.detail(of: "nope") == "unknown")
  }

  // MARK: Operator

  @Test("an operator's stop sticks: the worker exits and is not started again")
  func operatorStopSticks() {
    var harness = CoreHarness([makeSpec("a", restart: .always), makeSpec("b")])
    harness.begin()
    harness.makeReady("a", pid: 1)
    harness.makeReady("b", pid: 2)
    #expect(harness.core.operatorStop("a", now: harness.now).actions == [.mount("a", .unmount)])
    #expect(harness.core.held == ["a"])
    let exited = harness.exit("a", .exited(0))
    #expect(exited.actions == [.mount("a", .detachMount)])
    #expect(harness.machine("a").phase == .inactive)
    #expect(harness.core.nextDeadline == nil)
    harness.advance(.seconds(3600))
    #expect(harness.core.timerFired(now: harness.now) == [])
    #expect(
      harness.exit("b", .signaled(9)).actions(for: "a") == [], "other events do not revive it")
    #expect(
      harness.core.statusLine.hasPrefix(
        "0/2 mounts ready; a: stopped by operator; b: restarting after: "))

    let start = harness.core.operatorStart("a", now: harness.now)
    #expect(
      start.actions == [
        .mount(
          "a", .inspectMountpoint(attempt: 2, mountpoint: harness.machine("a").spec.mountpoint))
      ])
    #expect(harness.core.held.isEmpty)
  }

  @Test("an operator's stop during backoff cancels the restart")
  func operatorStopDuringBackoff() {
    var harness = CoreHarness([makeSpec("a")])
    harness.begin()
    harness.runWorker("a", pid: 1)
    harness.exit("a", .exited(1))
    #expect(harness.core.operatorStop("a", now: harness.now).actions == [])
    #expect(harness.machine("a").phase == .inactive)
    #expect(harness.core.nextDeadline == nil)
    #expect(harness.core.detail(of: "a") == "stopped by operator")
  }

  @Test("an operator's stop while starting: SIGTERM, then it stays stopped")
  func operatorStopWhileStarting() {
    var harness = CoreHarness([makeSpec("a")])
    harness.begin()
    harness.runWorker("a", pid: 1)
    #expect(
      harness.core.operatorStop("a", now: harness.now).actions == [
        .mount("a", .cancelProbe), .mount("a", .signal(15)),
      ])
    #expect(harness.exit("a", .signaled(15)).actions == [.mount("a", .detachMount)])
    #expect(harness.machine("a").phase == .inactive)
    #expect(harness.machine("a").lastFailure == nil)
  }

  @Test("an operator's start clears `failed`; on a running mount it does nothing")
  func operatorStart() {
    var harness = CoreHarness([makeSpec("a", restart: .never, required: false), makeSpec("b")])
    harness.begin()
    harness.runWorker("a", pid: 1)
    harness.exit("a", .exited(1))
    #expect(harness.machine("a").isFailed)
    #expect(
      harness.core.operatorStart("a", now: harness.now).actions == [
        .mount(
          "a", .inspectMountpoint(attempt: 2, mountpoint: harness.machine("a").spec.mountpoint))
      ])
    #expect(harness.core.operatorStart("a", now: harness.now) == [])
    harness.makeReady("b", pid: 2)
    #expect(harness.core.operatorStart("b", now: harness.now) == [])
  }

  @Test("an operator's restart: unmount, then a new attempt; it also lifts a stop")
  func operatorRestart() {
    var harness = CoreHarness([makeSpec("a")])
    harness.begin()
    harness.makeReady("a", pid: 1)
    #expect(harness.core.operatorRestart("a", now: harness.now).actions == [.mount("a", .unmount)])
    #expect(
      harness.exit("a").actions == [
        .mount("a", .detachMount),
        .mount(
          "a", .inspectMountpoint(attempt: 2, mountpoint: harness.machine("a").spec.mountpoint)),
      ])
    harness.makeReady("a", pid: 2)

    _ = harness.core.operatorStop("a", now: harness.now)
    harness.exit("a")
    #expect(
      harness.core.operatorRestart("a", now: harness.now).actions == [
        .mount(
          "a", .inspectMountpoint(attempt: 3, mountpoint: harness.machine("a").spec.mountpoint))
      ])
    #expect(harness.core.held.isEmpty)
  }

  @Test("an operator's stop of a parent stops its nested mounts first, then the parent")
  func operatorStopParent() {
    var harness = CoreHarness([
      makeSpec("p", mountpoint: "/mnt/p"), makeSpec("c", mountpoint: "/mnt/p/c"),
    ])
    harness.begin()
    harness.makeReady("p", pid: 1)
    harness.makeReady("c", pid: 2)
    let stop = harness.core.operatorStop("p", now: harness.now)
    #expect(stop.actions == [.mount("c", .unmount)])
    #expect(harness.exit("c").actions == [.mount("c", .detachMount), .mount("p", .unmount)])
    #expect(harness.exit("p").actions == [.mount("p", .detachMount)])
    #expect(harness.machine("p").phase == .inactive)
    #expect(harness.machine("c").phase == .inactive)
    #expect(harness.core.detail(of: "c") == "waiting for p")

    #expect(
      harness.core.operatorStart("p", now: harness.now).actions == [
        .mount(
          "p", .inspectMountpoint(attempt: 2, mountpoint: harness.machine("p").spec.mountpoint))
      ])
    #expect(
      harness.makeReady("p", pid: 3).actions(for: "c") == [
        .inspectMountpoint(attempt: 2, mountpoint: harness.machine("c").spec.mountpoint)
      ])
  }

  @Test(
    "an operator's restart of a parent: nested mounts down first, then both up again, parent first")
  func operatorRestartParent() {
    var harness = CoreHarness([
      makeSpec("p", mountpoint: "/mnt/p"), makeSpec("c", mountpoint: "/mnt/p/c"),
    ])
    harness.begin()
    harness.makeReady("p", pid: 1)
    harness.makeReady("c", pid: 2)
    let restart = harness.core.operatorRestart("p", now: harness.now)
    #expect(
      restart.actions == [.mount("c", .unmount)],
      "the parent's unmount would be EBUSY under a live child")
    #expect(harness.exit("c").actions == [.mount("c", .detachMount), .mount("p", .unmount)])
    #expect(
      harness.exit("p").actions == [
        .mount("p", .detachMount),
        .mount(
          "p", .inspectMountpoint(attempt: 2, mountpoint: harness.machine("p").spec.mountpoint)),
      ])
    #expect(
      harness.makeReady("p", pid: 3).actions(for: "c") == [
        .inspectMountpoint(attempt: 2, mountpoint: harness.machine("c").spec.mountpoint)
      ])
    harness.makeReady("c", pid: 4)
    #expect(harness.core.statusLine == "2/2 mounts ready")
  }

  @Test("an operator's start of a nested mount whose parent is down waits for the parent")
  func operatorStartWaitsForParent() {
    var harness = CoreHarness([
      makeSpec("p", mountpoint: "/mnt/p"), makeSpec("c", mountpoint: "/mnt/p/c"),
    ])
    harness.begin()
    #expect(harness.core.operatorStop("c", now: harness.now) == [])
    let start = harness.core.operatorStart("c", now: harness.now)
    #expect(start.actions(for: "c") == [], "no mountpoint is prepared inside an unmounted parent")
    #expect(harness.machine("c").phase == .inactive)
    #expect(harness.core.held.isEmpty)
    #expect(harness.core.operatorRestart("c", now: harness.now).actions(for: "c") == [])
    #expect(
      harness.makeReady("p", pid: 1).actions(for: "c") == [
        .inspectMountpoint(attempt: 1, mountpoint: harness.machine("c").spec.mountpoint)
      ])
  }

  @Test("an operator's start during shutdown starts nothing")
  func operatorStartDuringShutdown() {
    var harness = CoreHarness([makeSpec("a"), makeSpec("b")])
    harness.begin()
    harness.makeReady("a", pid: 1)
    harness.runWorker("b", pid: 2)
    _ = harness.core.shutdown(now: harness.now)
    harness.exit("b", .signaled(15))
    #expect(harness.machine("b").phase == .inactive)
    let start = harness.core.operatorStart("b", now: harness.now)
    #expect(start.actions == [])
    #expect(harness.machine("b").phase == .inactive)
    #expect(harness.exit("a").service == [.exit(code: 0)])
  }

  // MARK: Deadlines

  @Test("the timer goes to every mount whose deadline has passed, and only to those")
  func timerFiredRoutes() {
    var harness = CoreHarness([
      makeSpec("fast", startTimeout: .seconds(5)), makeSpec("slow", startTimeout: .seconds(20)),
    ])
    harness.begin()
    harness.runWorker("fast", pid: 1)
    harness.runWorker("slow", pid: 2)
    #expect(harness.core.nextDeadline == origin + .seconds(5))
    #expect(harness.core.startupDeadline == origin + .seconds(20))
    let effects = harness.fireTimers()
    #expect(effects.actions(for: "fast") == [.cancelProbe, .signal(9), .detachMount])
    #expect(effects.actions(for: "slow") == [])
    #expect(harness.core.nextDeadline == origin + .seconds(20))
  }

  @Test("startupDeadline: the latest deadline of a required mount not yet ready; nil after READY")
  func startupDeadline() {
    var harness = CoreHarness([
      makeSpec("a", startTimeout: .seconds(5)), makeSpec("b", startTimeout: .seconds(8)),
      makeSpec("opt", required: false, startTimeout: .seconds(50)),
    ])
    #expect(harness.core.startupDeadline == nil)
    harness.begin()
    #expect(harness.core.startupDeadline == origin + .seconds(8))
    #expect(harness.core.nextDeadline == origin + .seconds(5))
    harness.makeReady("b", pid: 2)
    #expect(harness.core.startupDeadline == origin + .seconds(5))
    harness.makeReady("a", pid: 1)
    #expect(harness.core.readyAnnounced)
    #expect(harness.core.startupDeadline == nil)
    #expect(harness.core.nextDeadline == origin + .seconds(50))
  }

  // MARK: statusLine

  @Test("statusLine: counts, then up to five mounts that are not ready")
  func statusLineCounts() {
    var harness = CoreHarness([makeSpec("a"), makeSpec("b")])
    #expect(harness.core.statusLine == "0/2 mounts ready; a: stopped; b: stopped")
    harness.begin()
    #expect(harness.core.statusLine == "0/2 mounts ready; a: starting; b: starting")
    harness.makeReady("a", pid: 1)
    #expect(harness.core.statusLine == "1/2 mounts ready; b: starting")
    harness.makeReady("b", pid: 2)
    #expect(harness.core.statusLine == "2/2 mounts ready")

    var many = CoreHarness((1...7).map { makeSpec("m\($0)") })
    many.begin()
    #expect(
      many.core.statusLine
        == "0/7 mounts ready; m1: starting; m2: starting; m3: starting; m4: starting; m5: starting; "
        + "and 2 more not ready")
  }

  @Test("statusLine: attempt number, backoff reason, exited, stopping")
  func statusLineDetails() {
    var harness = CoreHarness([makeSpec("photos"), makeSpec("docs", required: false)])
    harness.begin()
    harness.makeReady("docs", pid: 9)
    harness.runWorker("photos", pid: 1)
    harness.exit("photos", .exited(1), outputTail: ["boom"])
    let failure = harness.machine("photos").lastFailure!
    #expect(harness.core.statusLine == "1/2 mounts ready; photos: restarting after: \(failure)")
    #expect(failure.description.hasSuffix(": boom"))
    harness.fireTimers()
    #expect(harness.core.statusLine == "1/2 mounts ready; photos: starting, attempt 2")
    harness.makeReady("photos", pid: 2)
    harness.advance(.seconds(1))
    harness.exit("docs", .exited(0))
    #expect(harness.core.statusLine == "1/2 mounts ready; docs: exited with status 0")
    _ = harness.core.operatorRestart("photos", now: harness.now)
    #expect(
      harness.core.statusLine == "0/2 mounts ready; docs: exited with status 0; photos: stopping")
  }
}
