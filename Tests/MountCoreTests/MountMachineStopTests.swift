import MountConfig
import Testing

@testable import MountCore

@Suite("MountMachine: stop, restart, escalation, vanished mounts")
struct MountMachineStopTests {
  // MARK: stop in each phase

  @Test(
    "stop without a worker ends inactive at once",
    arguments: [
      Stage.inactive, .preparing, .startingWithoutPid, .backoff,
    ])
  func stopWithoutWorker(stage: Stage) {
    var harness = stage.harness()
    let effects = harness.send(.stop)
    #expect(effects.actions == [])
    #expect(harness.phase == .inactive)
    #expect(harness.machine.deadline == nil)
    #expect(harness.machine.isSettled)
  }

  @Test(
    "stop leaves a settled exited or failed mount as it is", arguments: [Stage.exited, .failed])
  func stopWhenSettled(stage: Stage) {
    var harness = stage.harness()
    let before = harness.phase
    #expect(harness.send(.stop) == [])
    #expect(harness.phase == before)
  }

  @Test("a stopped preparing attempt ignores its late answers")
  func stopWhilePreparing() {
    var harness = MachineHarness()
    harness.send(.start)
    harness.send(.stop)
    #expect(harness.send(.prepared(attempt: 1)) == [])
    #expect(harness.send(.prepareFailed(attempt: 1, Failure(summary: "x"))) == [])
    #expect(harness.phase == .inactive)
  }

  @Test("stop while ready: unmount, so the worker gets FUSE destroy")
  func stopWhileReady() {
    var harness = MachineHarness(makeSpec(stopTimeout: .seconds(3)))
    harness.makeReady(pid: 12)
    harness.advance(.seconds(20))
    let effects = harness.send(.stop)
    #expect(effects.actions == [.unmount])
    #expect(
      harness.phase
        == .stopping(
          .init(pid: 12, stage: .unmounting, deadline: harness.now + .seconds(3), then: .stay)))
    #expect(harness.machine.pid == 12)
    #expect(!harness.machine.isSettled)
  }

  @Test("stop while starting with the mount seen: cancel the probe and unmount")
  func stopWhileStartingMounted() {
    var harness = MachineHarness(makeSpec(readiness: .probe, stopTimeout: .seconds(3)))
    harness.runWorker(pid: 12)
    harness.send(.mountAppeared)
    let effects = harness.send(.stop)
    #expect(effects.actions == [.cancelProbe, .unmount])
    #expect(
      harness.phase
        == .stopping(
          .init(pid: 12, stage: .unmounting, deadline: harness.now + .seconds(3), then: .stay)))
  }

  @Test("stop while starting without a mount: nothing to unmount, SIGTERM")
  func stopWhileStartingUnmounted() {
    var harness = MachineHarness(makeSpec(stopTimeout: .seconds(3)))
    harness.runWorker(pid: 12)
    let effects = harness.send(.stop)
    #expect(effects.actions == [.cancelProbe, .signal(15)])
    #expect(
      harness.phase
        == .stopping(
          .init(pid: 12, stage: .terminating, deadline: harness.now + .seconds(3), then: .stay)))
  }

  // MARK: Escalation

  @Test("stop escalation: unmount → stop_timeout → SIGTERM → stop_timeout → SIGKILL + detach")
  func stopEscalation() {
    var harness = MachineHarness(makeSpec(stopTimeout: .seconds(3)))
    harness.makeReady(pid: 12)
    harness.send(.stop)
    let stopAt = harness.now
    #expect(harness.send(.mountVanished) == [], "the unmount itself is expected")

    harness.now = stopAt + .seconds(3) + .nanoseconds(-1)
    #expect(harness.send(.timerFired) == [])

    harness.now = stopAt + .seconds(3)
    #expect(harness.send(.timerFired).actions == [.signal(15)])
    #expect(
      harness.phase
        == .stopping(
          .init(pid: 12, stage: .terminating, deadline: stopAt + .seconds(6), then: .stay)))

    harness.now = stopAt + .seconds(6)
    #expect(harness.send(.timerFired).actions == [.signal(9), .detachMount])
    #expect(harness.phase == .stopping(.init(pid: 12, stage: .killing, deadline: nil, then: .stay)))
    #expect(harness.machine.deadline == nil)

    harness.advance(.seconds(100))
    #expect(harness.send(.timerFired) == [], "after SIGKILL there is nothing left to escalate")

    let effects = harness.send(.exited(.signaled(9), outputTail: []))
    #expect(effects.actions == [.detachMount])
    #expect(harness.phase == .inactive)
    #expect(harness.machine.isSettled)
  }

  @Test("a late timer escalates one stage per firing, each with a fresh stop_timeout")
  func lateStopTimer() {
    var harness = MachineHarness(makeSpec(stopTimeout: .seconds(3)))
    harness.makeReady(pid: 12)
    harness.send(.stop)
    harness.advance(.seconds(50))
    #expect(harness.send(.timerFired).actions == [.signal(15)])
    #expect(harness.machine.deadline == harness.now + .seconds(3))
  }

  @Test(
    "a worker that exits during any stop stage ends inactive",
    arguments: [MountMachine.StopStage.unmounting, .terminating, .killing])
  func exitDuringStop(stage: MountMachine.StopStage) {
    var harness = MachineHarness()
    harness.makeReady(pid: 12)
    harness.send(.stop)
    if stage != .unmounting { harness.fireDeadline() }
    if stage == .killing { harness.fireDeadline() }
    #expect(harness.machine.stopping?.stage == stage)
    let effects = harness.send(.exited(.exited(0), outputTail: []))
    #expect(effects.actions == [.detachMount])
    #expect(harness.phase == .inactive)
    #expect(harness.machine.lastFailure == nil, "a requested stop is no failure")
  }

  @Test("a stopped worker's failing exit status is no failure either")
  func failingExitDuringStop() {
    var harness = MachineHarness(makeSpec(restart: .never))
    harness.makeReady()
    harness.send(.stop)
    harness.send(.exited(.signaled(15), outputTail: ["terminated"]))
    #expect(harness.phase == .inactive)
  }

  @Test("the worker's messages are still read while it stops")
  func messagesWhileStopping() {
    var harness = MachineHarness()
    harness.makeReady()
    harness.send(.stop)
    let before = harness.phase
    harness.send(.message(datagram("STOPPING=1\nSTATUS=flushing caches")))
    #expect(harness.machine.workerStatus == "flushing caches")
    #expect(harness.phase == before)
  }

  // MARK: stop / start / restart while stopping

  @Test("start during a requested stop turns it into a restart")
  func startWhileStopping() {
    var harness = MachineHarness()
    harness.makeReady(pid: 12)
    harness.send(.stop)
    #expect(harness.send(.start) == [])
    #expect(harness.machine.stopping?.then == .restart)
    harness.advance(.seconds(1))
    let effects = harness.send(.exited(.exited(0), outputTail: []))
    #expect(
      effects.actions == [
        .detachMount, .inspectMountpoint(attempt: 2, mountpoint: harness.spec.mountpoint),
      ])
    #expect(harness.phase == .preparing(attempt: 2, deadline: harness.now + .seconds(10)))
  }

  @Test("stop during a restart turns it back into a stop")
  func stopWhileRestarting() {
    var harness = MachineHarness()
    harness.makeReady(pid: 12)
    harness.send(.restart)
    #expect(harness.send(.stop) == [])
    #expect(harness.machine.stopping?.then == .stay)
    harness.send(.exited(.exited(0), outputTail: []))
    #expect(harness.phase == .inactive)
  }

  @Test("stop while aborting a failed worker: ends inactive, no restart")
  func stopWhileRetrying() {
    var harness = MachineHarness()
    harness.makeReady(pid: 12)
    harness.send(.mountVanished)
    guard case .retry = harness.machine.stopping?.then else {
      Issue.record("expected a retry, got \(harness.phase)")
      return
    }
    #expect(harness.send(.stop) == [])
    #expect(harness.machine.stopping?.then == .stay)
    #expect(harness.machine.stopping?.stage == .terminating, "the stage is not reset")
    harness.send(.exited(.signaled(15), outputTail: []))
    #expect(harness.phase == .inactive)
  }

  @Test("a second stop changes nothing about a stop under way")
  func stopTwice() {
    var harness = MachineHarness()
    harness.makeReady(pid: 12)
    harness.send(.stop)
    let before = harness.phase
    harness.advance(.seconds(1))
    #expect(harness.send(.stop) == [])
    #expect(harness.phase == before)
  }

  // MARK: restart

  @Test("restart while ready: unmount, then a new attempt once the worker exited")
  func restartWhileReady() {
    var harness = MachineHarness(makeSpec(stopTimeout: .seconds(4)))
    harness.makeReady(pid: 12)
    let effects = harness.send(.restart)
    #expect(effects.actions == [.unmount])
    #expect(
      harness.phase
        == .stopping(
          .init(pid: 12, stage: .unmounting, deadline: harness.now + .seconds(4), then: .restart)))
    harness.advance(.milliseconds(10))
    let exitEffects = harness.send(.exited(.exited(0), outputTail: []))
    #expect(
      exitEffects.actions == [
        .detachMount, .inspectMountpoint(attempt: 2, mountpoint: harness.spec.mountpoint),
      ])
    #expect(harness.machine.restarts == 0, "an operator's restart is not an automatic one")
    #expect(harness.machine.attemptInRun == 1, "nor the second attempt of a run")
    harness.makeReady(pid: 13)
  }

  @Test("an operator's restart gives a fresh start limit: restarts for reloads never exhaust it")
  func operatorRestartsDoNotUseTheCrashBudget() {
    var harness = MachineHarness(makeSpec(startLimitBurst: 5))
    harness.makeReady(pid: 1)
    for pid in Int32(2)...Int32(7) {
      harness.send(.restart)
      harness.advance(.milliseconds(10))
      harness.send(.exited(.exited(0), outputTail: []))
      harness.makeReady(pid: pid)
    }
    harness.send(.exited(.signaled(9), outputTail: []))
    #expect(harness.machine.isInBackoff, "one crash after six restarts is retried")
    #expect(harness.machine.restarts == 0)
    harness.makeReady(pid: 8)
    #expect(harness.machine.restarts == 1)
  }

  @Test("restart escalates like stop when the worker hangs")
  func restartEscalates() {
    var harness = MachineHarness()
    harness.makeReady(pid: 12)
    harness.send(.restart)
    #expect(harness.fireDeadline().actions == [.signal(15)])
    #expect(harness.fireDeadline().actions == [.signal(9), .detachMount])
    #expect(
      harness.send(.exited(.signaled(9), outputTail: [])).actions == [
        .detachMount, .inspectMountpoint(attempt: 2, mountpoint: harness.spec.mountpoint),
      ])
  }

  @Test(
    "restart without a worker starts a new attempt at once",
    arguments: [
      Stage.inactive, .preparing, .startingWithoutPid, .backoff, .exited, .failed,
    ])
  func restartWithoutWorker(stage: Stage) {
    var harness = stage.harness()
    harness.advance(.seconds(1))
    let next = harness.machine.attempt + 1
    let effects = harness.send(.restart)
    #expect(
      effects.actions == [.inspectMountpoint(attempt: next, mountpoint: harness.spec.mountpoint)])
    #expect(harness.phase == .preparing(attempt: next, deadline: harness.now + .seconds(10)))
  }

  @Test(
    "restart while starting: the worker is stopped first",
    arguments: [Stage.starting, .startingMounted])
  func restartWhileStarting(stage: Stage) {
    var harness = stage.harness()
    let effects = harness.send(.restart)
    let expected: [MountMachine.Effect] =
      stage == .startingMounted ? [.cancelProbe, .unmount] : [.cancelProbe, .signal(15)]
    #expect(effects.actions == expected)
    #expect(harness.machine.stopping?.then == .restart)
    #expect(
      harness.send(.exited(.signaled(15), outputTail: [])).actions == [
        .detachMount, .inspectMountpoint(attempt: 2, mountpoint: harness.spec.mountpoint),
      ])
  }

  @Test("restart from failed clears the start history")
  func restartFromFailed() {
    var harness = MachineHarness(makeSpec(startLimitBurst: 2))
    harness.failStart()
    harness.failStart()
    #expect(harness.machine.isFailed)
    harness.advance(.seconds(1))
    #expect(
      harness.send(.restart).actions == [
        .inspectMountpoint(attempt: 3, mountpoint: harness.spec.mountpoint)
      ])
    harness.failStart()
    #expect(harness.machine.isInBackoff, "the starts before the restart no longer count")
  }

  // MARK: A mount that vanishes while ready

  @Test("the mount vanishing while ready: SIGTERM, then the restart policy")
  func mountVanishesWhileReady() {
    var harness = MachineHarness(makeSpec(stopTimeout: .seconds(2)))
    harness.makeReady(pid: 12)
    harness.advance(.seconds(1))
    let effects = harness.send(.mountVanished)
    #expect(effects.actions == [.signal(15)])
    let stopping = harness.machine.stopping
    #expect(stopping?.pid == 12)
    #expect(stopping?.stage == .terminating)
    #expect(stopping?.deadline == harness.now + .seconds(2))
    guard case .retry(let failure) = stopping?.then else {
      Issue.record("expected a retry")
      return
    }
    #expect(failure.summary.contains("/mnt/photos"))

    harness.send(.message(datagram("ERROR=connection to server lost")))
    let exitEffects = harness.send(.exited(.signaled(15), outputTail: ["bye"]))
    #expect(exitEffects.actions == [.detachMount])
    #expect(harness.phase == .backoff(until: harness.now + .milliseconds(100)))
    #expect(harness.machine.lastFailure?.summary == failure.summary)
    #expect(harness.machine.lastFailure?.workerError == "connection to server lost")
    #expect(harness.machine.lastFailure?.outputTail == ["bye"])
  }

  @Test("the mount vanishing while ready, worker hangs: SIGKILL + detach after stop_timeout")
  func mountVanishesWorkerHangs() {
    var harness = MachineHarness(makeSpec(restart: .never))
    harness.makeReady(pid: 12)
    harness.send(.mountVanished)
    #expect(harness.fireDeadline().actions == [.signal(9), .detachMount])
    harness.send(.exited(.signaled(9), outputTail: []))
    #expect(harness.machine.isFailed)
    #expect(harness.machine.failure?.summary.contains("/mnt/photos") == true)
  }
}
