import MountConfig
import Testing

@testable import MountCore

/// What the restart policy makes of an exit.
enum Outcome: String, Sendable {
  case backoff, exited, failed
}

func outcome(of machine: MountMachine) -> Outcome? {
  switch machine.phase {
  case .backoff: .backoff
  case .exited: .exited
  case .failed: .failed
  default: nil
  }
}

@Suite("MountMachine: exits, restart policies, backoff, start limit, start timeout")
struct MountMachineFailureTests {
  // MARK: Exits before the mount is confirmed

  @Test(
    "an exit before readiness is a failure, whatever the status",
    arguments: [
      (RestartPolicy.always, ExitStatus.exited(0), Outcome.backoff),
      (.always, .exited(1), .backoff),
      (.always, .signaled(9), .backoff),
      (.onFailure, .exited(0), .backoff),
      (.onFailure, .exited(2), .backoff),
      (.onFailure, .signaled(11), .backoff),
      (.never, .exited(0), .failed),
      (.never, .exited(1), .failed),
      (.never, .signaled(6), .failed),
    ])
  func exitWhileStarting(policy: RestartPolicy, status: ExitStatus, expected: Outcome) {
    var harness = MachineHarness(makeSpec(restart: policy))
    harness.runWorker()
    harness.send(.mountAppeared)
    harness.advance(.milliseconds(20))
    let effects = harness.send(.exited(status, outputTail: ["fuse: device not found"]))
    #expect(effects.actions == [.cancelProbe, .detachMount])
    #expect(outcome(of: harness.machine) == expected)
    let failure = harness.machine.lastFailure
    #expect(failure?.summary.contains(status.description) == true)
    #expect(failure?.workerError == "fuse: device not found")
    #expect(failure?.outputTail == ["fuse: device not found"])
    if expected == .backoff {
      #expect(harness.phase == .backoff(until: harness.now + .milliseconds(100)))
    } else {
      #expect(harness.phase == .failed(failure!))
    }
  }

  @Test("the worker's words: its ERROR first, else the last non-blank output line")
  func workerWords() {
    var harness = MachineHarness()
    harness.runWorker()
    harness.send(
      .exited(.exited(1), outputTail: ["starting", "mount: permission denied", "   ", ""]))
    #expect(harness.machine.lastFailure?.workerError == "mount: permission denied")

    harness.runWorker()
    harness.send(.message(datagram("ERROR=share not found\nERRNO=2")))
    harness.send(.exited(.exited(1), outputTail: ["usage: ..."]))
    #expect(harness.machine.lastFailure?.workerError == "share not found")
    #expect(harness.machine.lastFailure?.errno == 2)

    harness.runWorker()
    harness.send(.exited(.signaled(9), outputTail: []))
    #expect(harness.machine.lastFailure?.workerError == nil)
    #expect(harness.machine.lastFailure?.errno == nil, "a new attempt forgets the old ERRNO")
  }

  // MARK: Exits after readiness: restart policies

  @Test(
    "an exit after readiness follows the restart policy",
    arguments: [
      (RestartPolicy.always, ExitStatus.exited(0), Outcome.backoff),
      (.always, .exited(3), .backoff),
      (.always, .signaled(9), .backoff),
      (.onFailure, .exited(0), .exited),
      (.onFailure, .exited(3), .backoff),
      (.onFailure, .signaled(11), .backoff),
      (.never, .exited(0), .exited),
      (.never, .exited(3), .failed),
      (.never, .signaled(9), .failed),
    ])
  func exitWhileReady(policy: RestartPolicy, status: ExitStatus, expected: Outcome) {
    var harness = MachineHarness(makeSpec(restart: policy))
    harness.makeReady()
    harness.advance(.seconds(1))
    harness.send(.message(WorkerMessage(errorText: "bye")))
    // Output printed while it served is kept, but only ERROR= explains a crash after readiness.
    let effects = harness.send(.exited(status, outputTail: ["served a request"]))
    #expect(effects.actions == [.detachMount])
    #expect(outcome(of: harness.machine) == expected)
    #expect(harness.machine.pid == nil)
    switch expected {
    case .exited:
      #expect(harness.phase == .exited(status))
      #expect(harness.machine.deadline == nil)
      #expect(harness.machine.isSettled)
    case .backoff:
      #expect(harness.phase == .backoff(until: harness.now + .milliseconds(100)))
      #expect(harness.machine.lastFailure?.summary.contains(status.description) == true)
      #expect(harness.machine.lastFailure?.workerError == "bye")
    case .failed:
      #expect(harness.machine.failure?.summary.contains(status.description) == true)
      #expect(harness.machine.failure?.workerError == "bye")
      #expect(harness.machine.lastFailure == harness.machine.failure)
    }
  }

  @Test("after the backoff the next attempt starts at the deadline")
  func backoffRestarts() {
    var harness = MachineHarness()
    harness.makeReady(pid: 7)
    harness.advance(.seconds(1))
    harness.send(.exited(.signaled(9), outputTail: []))
    let until = harness.now + .milliseconds(100)
    #expect(harness.machine.deadline == until)
    harness.now = until + .nanoseconds(-1)
    #expect(harness.send(.timerFired) == [])
    harness.now = until
    let effects = harness.send(.timerFired)
    #expect(
      effects.actions == [.inspectMountpoint(attempt: 2, mountpoint: harness.spec.mountpoint)])
    #expect(harness.phase == .preparing(attempt: 2, deadline: until + .seconds(10)))
    #expect(harness.machine.restarts == 1)
  }

  @Test("a late timer (after the deadline) still restarts")
  func lateTimer() {
    var harness = MachineHarness()
    harness.failStart()
    harness.advance(.seconds(5))
    #expect(
      harness.send(.timerFired).actions == [
        .inspectMountpoint(attempt: 2, mountpoint: harness.spec.mountpoint)
      ])
    #expect(harness.phase == .preparing(attempt: 2, deadline: harness.now + .seconds(10)))
  }

  @Test(
    "exited is ignored when no worker runs",
    arguments: [
      Stage.inactive, .preparing, .backoff, .exited, .failed,
    ])
  func exitWithoutWorker(stage: Stage) {
    var harness = stage.harness()
    let before = harness.phase
    #expect(harness.send(.exited(.exited(1), outputTail: ["x"])) == [])
    #expect(harness.phase == before)
  }

  // MARK: Backoff doubling, cap, reset

  @Test("the restart delay doubles per consecutive failure up to restart_delay_max")
  func backoffDoubles() {
    var harness = MachineHarness(
      makeSpec(
        restartDelay: .milliseconds(100), restartDelayMax: .seconds(1), startLimitBurst: 1000))
    var delays: [Duration] = []
    for _ in 0..<7 {
      harness.failStart()
      delays.append(harness.machine.backoffUntil! - harness.now)
    }
    #expect(
      delays == [
        .milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .seconds(1),
        .seconds(1),
        .seconds(1),
      ])
  }

  @Test("the cap applies even when it is not a power-of-two multiple of the first delay")
  func backoffCapNotPowerOfTwo() {
    var harness = MachineHarness(
      makeSpec(
        restartDelay: .milliseconds(300), restartDelayMax: .seconds(1), startLimitBurst: 1000))
    var delays: [Duration] = []
    for _ in 0..<4 {
      harness.failStart()
      delays.append(harness.machine.backoffUntil! - harness.now)
    }
    #expect(delays == [.milliseconds(300), .milliseconds(600), .seconds(1), .seconds(1)])
  }

  @Test("a first delay above the maximum is capped")
  func firstDelayAboveMax() {
    var harness = MachineHarness(makeSpec(restartDelay: .seconds(5), restartDelayMax: .seconds(2)))
    harness.failStart()
    #expect(harness.machine.backoffUntil! - harness.now == .seconds(2))
  }

  @Test("many failures do not overflow the delay")
  func manyFailures() {
    var harness = MachineHarness(
      makeSpec(restartDelay: .seconds(1), restartDelayMax: .seconds(3600), startLimitBurst: 10_000))
    for _ in 0..<200 { harness.failStart() }
    #expect(harness.machine.backoffUntil! - harness.now == .seconds(3600))
  }

  @Test(
    "the delay resets once the worker stayed ready for `stableAfter`",
    arguments: [
      (Duration.seconds(10), Duration.milliseconds(100)),
      (.seconds(3600), .milliseconds(100)),
      (.seconds(10) - .nanoseconds(1), .milliseconds(800)),
      (.seconds(1), .milliseconds(800)),
    ])
  func backoffResetsAfterStableRun(served: Duration, expectedDelay: Duration) {
    #expect(MountMachine.stableAfter == .seconds(10))
    var harness = MachineHarness(makeSpec(startLimitBurst: 100))
    for _ in 0..<3 { harness.failStart() }
    #expect(harness.machine.backoffUntil! - harness.now == .milliseconds(400))
    harness.makeReady()
    harness.advance(served)
    harness.send(.exited(.signaled(11), outputTail: []))
    #expect(harness.machine.backoffUntil! - harness.now == expectedDelay)
  }

  @Test(
    "restart = always: clean exits after readiness restart after the first delay, not a growing one"
  )
  func cleanExitsDoNotGrowDelay() {
    var harness = MachineHarness(makeSpec(restart: .always, startLimitBurst: 100))
    for _ in 0..<4 {
      harness.makeReady()
      harness.advance(.seconds(1))
      harness.send(.exited(.exited(0), outputTail: []))
      #expect(harness.machine.backoffUntil! - harness.now == .milliseconds(100))
    }
  }

  @Test("a stable run also resets the delay when the mount vanished from outside")
  func vanishAfterStableRunResetsDelay() {
    var harness = MachineHarness(makeSpec(startLimitBurst: 100))
    for _ in 0..<3 { harness.failStart() }
    harness.makeReady(pid: 9)
    harness.advance(.seconds(60))
    harness.send(.mountVanished)
    harness.advance(.milliseconds(5))
    harness.send(.exited(.signaled(15), outputTail: []))
    #expect(harness.machine.backoffUntil.map { $0 - harness.now } == .milliseconds(100))
  }

  @Test("a stable run also resets the delay when it ended with an operator restart")
  func restartAfterStableRunResetsDelay() {
    var harness = MachineHarness(makeSpec(startLimitBurst: 100))
    for _ in 0..<3 { harness.failStart() }
    harness.makeReady(pid: 9)
    harness.advance(.seconds(60))
    harness.send(.restart)
    harness.send(.exited(.exited(0), outputTail: []))
    // The new worker crashes at once: the previous run was stable, so the delay starts over.
    harness.failStart()
    #expect(harness.machine.backoffUntil.map { $0 - harness.now } == .milliseconds(100))
  }

  // MARK: Start limit

  @Test("more than start_limit_burst starts within the interval: failed, with the worker's words")
  func startLimit() throws {
    var harness = MachineHarness(makeSpec(startLimitBurst: 3, startLimitInterval: .seconds(60)))
    for number in 1...2 {
      harness.runWorker()
      harness.send(.message(datagram("ERROR=attempt \(number) failed")))
      harness.send(.exited(.exited(1), outputTail: []))
      #expect(harness.machine.isInBackoff)
    }
    harness.runWorker()
    harness.send(.message(datagram("ERROR=share /srv/photos not found\nERRNO=2")))
    let effects = harness.send(.exited(.exited(1), outputTail: ["line 1", "line 2"]))
    #expect(effects.actions == [.cancelProbe, .detachMount])
    let failure = try #require(harness.machine.failure)
    #expect(failure.summary.contains("start limit"))
    #expect(failure.summary.contains(ExitStatus.exited(1).description))
    #expect(failure.workerError == "share /srv/photos not found")
    #expect(failure.errno == 2)
    #expect(failure.outputTail == ["line 1", "line 2"])
    #expect(harness.machine.lastFailure == failure)
    #expect(harness.machine.attempt == 3, "no start beyond the burst")
    #expect(harness.machine.deadline == nil)
    harness.advance(.seconds(3600))
    #expect(harness.send(.timerFired) == [])
    #expect(harness.machine.isFailed)
  }

  @Test("the start limit counts crashes after readiness as well")
  func startLimitCountsCrashLoops() {
    var harness = MachineHarness(makeSpec(startLimitBurst: 3))
    for _ in 0..<2 {
      harness.makeReady()
      harness.advance(.milliseconds(500))
      harness.send(.exited(.signaled(11), outputTail: ["segfault"]))
      #expect(harness.machine.isInBackoff)
    }
    harness.makeReady()
    harness.advance(.milliseconds(500))
    harness.send(.message(WorkerMessage(errorText: "segfault")))
    harness.send(.exited(.signaled(11), outputTail: ["served a request"]))
    #expect(harness.machine.failure?.workerError == "segfault")
    #expect(harness.machine.failure?.outputTail == ["served a request"])
  }

  @Test("starts spread wider than the interval never hit the limit")
  func startsOutsideInterval() {
    var harness = MachineHarness(
      makeSpec(
        restartDelay: .milliseconds(600), restartDelayMax: .milliseconds(600), startLimitBurst: 3,
        startLimitInterval: .seconds(1)))
    for _ in 0..<20 {
      harness.failStart()
      #expect(harness.machine.isInBackoff)
    }
  }

  @Test("start clears `failed` and the start history")
  func startClearsFailed() {
    var harness = MachineHarness(makeSpec(startLimitBurst: 2))
    harness.failStart()
    harness.failStart()
    #expect(harness.machine.isFailed)
    harness.advance(.seconds(1))
    let effects = harness.send(.start)
    #expect(
      effects.actions == [.inspectMountpoint(attempt: 3, mountpoint: harness.spec.mountpoint)])
    #expect(harness.phase == .preparing(attempt: 3, deadline: harness.now + .seconds(10)))
    harness.failStart()
    #expect(harness.machine.isInBackoff, "the earlier starts no longer count")
    #expect(
      harness.machine.backoffUntil! - harness.now == .milliseconds(100), "and the delay starts over"
    )
  }

  @Test("restart = never gives up on the first failure without the start-limit wording")
  func neverGivesUpAtOnce() throws {
    var harness = MachineHarness(makeSpec(restart: .never))
    harness.failStart(outputTail: ["no"])
    let failure = try #require(harness.machine.failure)
    #expect(!failure.summary.contains("start limit"))
    #expect(failure.workerError == "no")
  }

  // MARK: Start timeout

  @Test("no confirmation within start_timeout: SIGKILL and detach, then a restart")
  func startTimeout() throws {
    var harness = MachineHarness(makeSpec(startTimeout: .seconds(5)))
    harness.runWorker(pid: 31)
    harness.send(.message(datagram("STATUS=waiting for network\nERROR=network unreachable")))
    harness.advance(.milliseconds(4999))
    #expect(harness.send(.timerFired) == [])
    #expect(harness.machine.starting != nil)

    harness.now = origin + .seconds(5)
    let effects = harness.send(.timerFired)
    #expect(effects.actions == [.cancelProbe, .signal(9), .detachMount])
    let stopping = try #require(harness.machine.stopping)
    #expect(stopping.pid == 31)
    #expect(stopping.stage == .killing)
    #expect(stopping.deadline == nil)
    guard case .retry(let failure) = stopping.then else {
      Issue.record("expected a retry, got \(stopping.then)")
      return
    }
    #expect(failure.summary.contains("READY"))
    #expect(failure.summary.contains("no FUSE mount"))
    #expect(failure.workerError == "network unreachable")
    #expect(!harness.machine.isReady)
    #expect(!harness.machine.isSettled)
    #expect(harness.machine.deadline == nil)

    harness.advance(.milliseconds(2))
    let exitEffects = harness.send(.exited(.signaled(9), outputTail: ["still waiting"]))
    #expect(exitEffects.actions == [.detachMount])
    #expect(harness.phase == .backoff(until: harness.now + .milliseconds(100)))
    let recorded = try #require(harness.machine.lastFailure)
    #expect(recorded.summary == failure.summary, "the timeout, not the SIGKILL, is the reason")
    #expect(recorded.workerError == "network unreachable")
    #expect(recorded.outputTail == ["still waiting"])

    #expect(
      harness.fireDeadline().actions == [
        .inspectMountpoint(attempt: 2, mountpoint: harness.spec.mountpoint)
      ])
  }

  @Test("start timeout: the reason names only what was missing")
  func startTimeoutReasons() {
    var readyOnly = MachineHarness()
    readyOnly.runWorker()
    readyOnly.send(.message(readyMessage))
    readyOnly.fireDeadline()
    readyOnly.send(.exited(.signaled(9), outputTail: []))
    let noMount = readyOnly.machine.lastFailure!.summary
    #expect(noMount.contains("no FUSE mount"))
    #expect(!noMount.contains("READY"))

    var mountOnly = MachineHarness()
    mountOnly.runWorker()
    mountOnly.send(.mountAppeared)
    mountOnly.fireDeadline()
    mountOnly.send(.exited(.signaled(9), outputTail: []))
    let noReady = mountOnly.machine.lastFailure!.summary
    #expect(noReady.contains("READY"))
    #expect(!noReady.contains("no FUSE mount"))
  }

  @Test("start timeout in mode probe names the probe's last error")
  func startTimeoutProbe() {
    var harness = MachineHarness(makeSpec(readiness: .probe))
    harness.runWorker()
    harness.send(.mountAppeared)
    harness.send(.probeFailed(attempt: 1, "Transport endpoint is not connected"))
    let effects = harness.fireDeadline()
    #expect(effects.actions == [.cancelProbe, .signal(9), .detachMount])
    guard case .retry(let failure) = harness.machine.stopping?.then else {
      Issue.record("expected a retry")
      return
    }
    #expect(failure.summary.contains("Transport endpoint is not connected"))
    #expect(!failure.summary.contains("READY"), "mode probe does not wait for READY")
  }

  @Test("start timeout with restart = never: failed once the killed worker is gone")
  func startTimeoutNever() {
    var harness = MachineHarness(makeSpec(restart: .never))
    harness.runWorker()
    harness.fireDeadline()
    #expect(!harness.machine.isSettled)
    harness.send(.exited(.signaled(9), outputTail: []))
    #expect(harness.machine.isFailed)
    #expect(harness.machine.failure?.summary.contains("no confirmed FUSE init") == true)
  }

  @Test("start timeout before the spawn answered: no signal, straight to backoff")
  func startTimeoutWithoutPid() {
    var harness = MachineHarness()
    harness.send(.start)
    harness.send(.prepared(attempt: 1))
    let effects = harness.fireDeadline()
    #expect(effects.actions == [])
    #expect(harness.phase == .backoff(until: harness.now + .milliseconds(100)))
  }

  @Test("start timeout while preparing: backoff; the late `prepared` is ignored")
  func startTimeoutWhilePreparing() {
    var harness = MachineHarness(makeSpec(startTimeout: .seconds(2)))
    harness.send(.start)
    let effects = harness.fireDeadline()
    #expect(effects.actions == [])
    #expect(harness.phase == .backoff(until: origin + .seconds(2) + .milliseconds(100)))
    #expect(harness.machine.lastFailure?.summary.contains("/mnt/photos") == true)
    #expect(harness.send(.prepared(attempt: 1)) == [])
    #expect(harness.machine.isInBackoff)
  }

  @Test("preparing the mountpoint has the start timeout; the worker gets it anew from its spawn")
  func startDeadlineFromStart() {
    var harness = MachineHarness(makeSpec(startTimeout: .seconds(4)))
    harness.send(.start)
    #expect(harness.machine.deadline == origin + .seconds(4))
    harness.advance(.seconds(3))
    harness.send(.prepared(attempt: 1))
    harness.send(.spawned(pid: 5))
    #expect(harness.machine.deadline == origin + .seconds(7))
  }

  @Test("a worker that exits after the SIGKILL of a timeout counts towards the start limit")
  func timeoutsHitStartLimit() throws {
    var harness = MachineHarness(makeSpec(startTimeout: .seconds(1), startLimitBurst: 2))
    harness.runWorker()
    harness.fireDeadline()
    harness.send(.exited(.signaled(9), outputTail: []))
    #expect(harness.machine.isInBackoff)
    harness.runWorker()
    harness.send(.message(datagram("ERROR=stuck in init")))
    harness.fireDeadline()
    harness.send(.exited(.signaled(9), outputTail: []))
    let failure = try #require(harness.machine.failure)
    #expect(failure.summary.contains("start limit"))
    #expect(failure.workerError == "stuck in init")
  }
}
