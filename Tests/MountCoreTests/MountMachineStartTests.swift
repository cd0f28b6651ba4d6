import MountConfig
import Testing

@testable import MountCore

@Suite("MountMachine: starting and confirming a mount")
struct MountMachineStartTests {
  // MARK: Derived facts per phase

  @Test("a new machine is inactive, settled, without deadline or worker")
  func initialState() {
    let machine = MountMachine(spec: makeSpec())
    #expect(machine.phase == .inactive)
    #expect(machine.deadline == nil)
    #expect(machine.pid == nil)
    #expect(machine.attempt == 0)
    #expect(machine.restarts == 0)
    #expect(machine.lastFailure == nil)
    #expect(machine.workerStatus == nil)
    #expect(machine.isSettled)
    #expect(!machine.isReady)
    #expect(!machine.isFailed)
    #expect(machine.stateName == "stopped")
  }

  @Test("state name, settledness and deadline in every phase", arguments: Stage.allCases)
  func derivedFacts(stage: Stage) {
    let harness = stage.harness()
    let machine = harness.machine
    let expected: (name: String, settled: Bool, hasDeadline: Bool, pid: Int32?) =
      switch stage {
      case .inactive: ("stopped", true, false, nil)
      case .preparing, .startingWithoutPid: ("starting", false, true, nil)
      case .starting, .startingMounted: ("starting", false, true, 100)
      case .ready: ("ready", false, false, 100)
      case .backoff: ("backoff", false, true, nil)
      case .stopping: ("stopping", false, true, 100)
      case .exited: ("exited", true, false, nil)
      case .failed: ("failed", true, false, nil)
      }
    #expect(machine.stateName == expected.name)
    #expect(machine.isSettled == expected.settled)
    #expect((machine.deadline != nil) == expected.hasDeadline)
    #expect(machine.pid == expected.pid)
    #expect(machine.isReady == (stage == .ready))
    #expect(machine.isFailed == (stage == .failed))
  }

  // MARK: start → prepare → spawn

  @Test("start prepares attempt 1 with the start timeout as deadline")
  func startPrepares() {
    var harness = MachineHarness(makeSpec(startTimeout: .seconds(7)))
    let effects = harness.send(.start)
    #expect(
      effects.actions == [.inspectMountpoint(attempt: 1, mountpoint: harness.spec.mountpoint)])
    #expect(harness.phase == .preparing(attempt: 1, deadline: origin + .seconds(7)))
    #expect(harness.machine.deadline == origin + .seconds(7))
    #expect(harness.machine.attempt == 1)
    #expect(harness.machine.restarts == 0)
  }

  @Test("prepared for the current attempt spawns, with the start timeout from now")
  func preparedSpawns() {
    var harness = MachineHarness(makeSpec(startTimeout: .seconds(7)))
    harness.send(.start)
    harness.advance(.milliseconds(30))
    let effects = harness.send(.prepared(attempt: 1))
    #expect(effects == [.spawn(attempt: 1, harness.spec)])
    #expect(harness.phase == .starting(attempt: 1, deadline: harness.now + .seconds(7), .init()))
  }

  @Test("prepared or prepareFailed for another attempt is ignored", arguments: [0, 2, 7])
  func stalePrepareAnswers(stale: Int) {
    var harness = MachineHarness()
    harness.send(.start)
    let before = harness.phase
    #expect(harness.send(.prepared(attempt: stale)) == [])
    #expect(harness.send(.prepareFailed(attempt: stale, Failure(summary: "stale"))) == [])
    #expect(harness.phase == before)
    #expect(harness.machine.lastFailure == nil)
  }

  @Test("prepared and prepareFailed outside `preparing` are ignored", arguments: Stage.allCases)
  func prepareAnswersOutsidePreparing(stage: Stage) {
    guard stage != .preparing else { return }
    var harness = stage.harness()
    let before = harness.phase
    let attempt = harness.machine.attempt
    #expect(harness.send(.prepared(attempt: attempt)) == [])
    #expect(harness.send(.prepareFailed(attempt: attempt, Failure(summary: "late"))) == [])
    #expect(harness.phase == before)
  }

  @Test("a late `prepared` after a restart belongs to the old attempt and is ignored")
  func preparedAfterRestart() {
    var harness = MachineHarness()
    harness.send(.start)
    harness.advance(.seconds(1))
    let effects = harness.send(.restart)
    #expect(
      effects.actions == [.inspectMountpoint(attempt: 2, mountpoint: harness.spec.mountpoint)])
    #expect(harness.phase == .preparing(attempt: 2, deadline: harness.now + .seconds(10)))
    #expect(harness.send(.prepared(attempt: 1)) == [])
    #expect(harness.send(.prepared(attempt: 2)) == [.spawn(attempt: 2, harness.spec)])
  }

  @Test("prepareFailed for the current attempt backs off and keeps the failure")
  func prepareFailed() {
    var harness = MachineHarness()
    harness.send(.start)
    let failure = Failure(summary: "a live FUSE mount that is not ours is at /mnt/photos")
    let effects = harness.send(.prepareFailed(attempt: 1, failure))
    #expect(effects.actions == [])
    #expect(harness.phase == .backoff(until: origin + .milliseconds(100)))
    #expect(harness.machine.lastFailure == failure)
  }

  @Test("prepareFailed with restart = never fails the mount")
  func prepareFailedNever() {
    var harness = MachineHarness(makeSpec(restart: .never))
    harness.send(.start)
    let failure = Failure(summary: "not a directory")
    harness.send(.prepareFailed(attempt: 1, failure))
    #expect(harness.phase == .failed(failure))
    #expect(harness.machine.deadline == nil)
  }

  @Test("spawned records the worker's pid and changes nothing else")
  func spawnedRecordsPid() {
    var harness = MachineHarness()
    harness.send(.start)
    harness.send(.prepared(attempt: 1))
    #expect(harness.send(.spawned(pid: 4242)) == [])
    #expect(
      harness.phase == .starting(attempt: 1, deadline: origin + .seconds(10), .init(pid: 4242)))
    #expect(harness.machine.pid == 4242)
  }

  @Test("spawned outside `starting` is ignored", arguments: Stage.allCases)
  func spawnedOutsideStarting(stage: Stage) {
    guard stage != .startingWithoutPid, stage != .starting, stage != .startingMounted else {
      return
    }
    var harness = stage.harness()
    let before = harness.phase
    #expect(harness.send(.spawned(pid: 999)) == [])
    #expect(harness.phase == before)
  }

  @Test("spawnFailed while starting backs off with that failure")
  func spawnFailed() {
    var harness = MachineHarness()
    harness.send(.start)
    harness.send(.prepared(attempt: 1))
    let failure = Failure(summary: "execve: No such file or directory")
    let effects = harness.send(.spawnFailed(failure))
    #expect(effects.actions == [])
    #expect(harness.phase == .backoff(until: origin + .milliseconds(100)))
    #expect(harness.machine.lastFailure == failure)
  }

  @Test("spawnFailed with restart = never fails the mount")
  func spawnFailedNever() {
    var harness = MachineHarness(makeSpec(restart: .never))
    harness.send(.start)
    harness.send(.prepared(attempt: 1))
    let failure = Failure(summary: "execve: Permission denied")
    harness.send(.spawnFailed(failure))
    #expect(harness.phase == .failed(failure))
  }

  @Test("spawnFailed outside `starting` is ignored", arguments: Stage.allCases)
  func spawnFailedOutsideStarting(stage: Stage) {
    guard stage != .startingWithoutPid, stage != .starting, stage != .startingMounted else {
      return
    }
    var harness = stage.harness()
    let before = harness.phase
    #expect(harness.send(.spawnFailed(Failure(summary: "late"))) == [])
    #expect(harness.phase == before)
  }

  @Test(
    "start does nothing while an attempt runs or the mount is ready",
    arguments: [
      Stage.preparing, .startingWithoutPid, .starting, .startingMounted, .ready,
    ])
  func startWhileRunning(stage: Stage) {
    var harness = stage.harness()
    let before = harness.phase
    let attempt = harness.machine.attempt
    #expect(harness.send(.start) == [])
    #expect(harness.phase == before)
    #expect(harness.machine.attempt == attempt)
  }

  // MARK: Readiness, mode protocol / notify

  @Test(
    "READY then the mount: ready at the instant the second arrives",
    arguments: [ReadinessMode.protocol, .notify])
  func readyThenMount(mode: ReadinessMode) {
    var harness = MachineHarness(makeSpec(readiness: mode))
    harness.runWorker(pid: 7)
    harness.advance(.milliseconds(3))
    #expect(harness.send(.message(readyMessage)).actions == [])
    #expect(harness.machine.starting == .init(pid: 7, readySeen: true))
    #expect(!harness.machine.isReady)
    harness.advance(.milliseconds(2))
    let effects = harness.send(.mountAppeared)
    #expect(effects.actions == [])
    #expect(harness.phase == .ready(pid: 7, since: origin + .milliseconds(5)))
    #expect(harness.machine.deadline == nil)
  }

  @Test("the mount then READY: ready as well", arguments: [ReadinessMode.protocol, .notify])
  func mountThenReady(mode: ReadinessMode) {
    var harness = MachineHarness(makeSpec(readiness: mode))
    harness.runWorker(pid: 7)
    #expect(harness.send(.mountAppeared).actions == [])
    #expect(harness.machine.starting == .init(pid: 7, mountSeen: true))
    harness.advance(.milliseconds(9))
    harness.send(.message(readyMessage))
    #expect(harness.phase == .ready(pid: 7, since: origin + .milliseconds(9)))
  }

  @Test("the s6 bare newline counts as READY")
  func bareNewlineReadies() {
    var harness = MachineHarness()
    harness.runWorker(pid: 7)
    harness.send(.mountAppeared)
    harness.send(.message(WorkerMessage(datagram: [UInt8(ascii: "\n")])))
    #expect(harness.machine.isReady)
  }

  @Test("READY alone never confirms: the worker's word needs the mount table")
  func readyAloneIsNotEnough() {
    var harness = MachineHarness()
    harness.runWorker()
    harness.send(.message(readyMessage))
    harness.send(.message(datagram("READY=1\nSTATUS=mounted")))
    #expect(!harness.machine.isReady)
    #expect(harness.machine.starting?.readySeen == true)
  }

  @Test("the mount alone never confirms in mode protocol")
  func mountAloneIsNotEnough() {
    var harness = MachineHarness()
    harness.runWorker()
    harness.send(.mountAppeared)
    harness.send(.mountAppeared)
    #expect(!harness.machine.isReady)
  }

  @Test("a mount that vanishes again before READY must reappear")
  func mountVanishesWhileStarting() {
    var harness = MachineHarness()
    harness.runWorker(pid: 7)
    harness.send(.mountAppeared)
    #expect(harness.send(.mountVanished) == [])
    #expect(harness.machine.starting == .init(pid: 7))
    harness.send(.message(readyMessage))
    #expect(!harness.machine.isReady)
    harness.send(.mountAppeared)
    #expect(harness.machine.isReady)
  }

  @Test("messages before the worker is spawned are ignored")
  func messagesBeforeSpawn() {
    var harness = MachineHarness()
    harness.send(.start)
    #expect(harness.send(.message(datagram("READY=1\nSTATUS=early\nERROR=x"))) == [])
    harness.send(.prepared(attempt: 1))
    #expect(harness.send(.message(readyMessage)) == [])
    #expect(harness.machine.starting == .init())
    #expect(harness.machine.workerStatus == nil)
  }

  @Test("mountAppeared before the pid is known does not confirm without a pid")
  func mountBeforePid() {
    var harness = MachineHarness()
    harness.send(.start)
    harness.send(.prepared(attempt: 1))
    harness.send(.mountAppeared)
    #expect(!harness.machine.isReady)
    #expect(harness.machine.starting?.mountSeen == true)
  }

  @Test("READY, the mount and STATUS after READY change nothing while ready")
  func eventsWhileReady() {
    var harness = MachineHarness()
    harness.makeReady(pid: 7)
    let since = harness.now
    harness.advance(.seconds(3))
    #expect(harness.send(.message(readyMessage)) == [])
    #expect(harness.send(.mountAppeared) == [])
    #expect(harness.send(.spawned(pid: 8)) == [])
    harness.send(.message(datagram("STATUS=serving")))
    #expect(harness.phase == .ready(pid: 7, since: since))
    #expect(harness.machine.workerStatus == "serving")
  }

  // MARK: Readiness, mode probe

  @Test("mode probe: the mount starts one probe, its answer confirms; READY is not needed")
  func probeConfirms() {
    var harness = MachineHarness(makeSpec(readiness: .probe))
    harness.runWorker(pid: 7)
    harness.send(.message(readyMessage))
    #expect(harness.machine.starting?.readySeen == false)
    #expect(
      harness.send(.mountAppeared).actions == [
        .startProbe(
          attempt: 1, mountpoint: harness.spec.mountpoint, probePath: harness.spec.probePath)
      ])
    #expect(harness.send(.mountAppeared).actions == [])
    #expect(!harness.machine.isReady)
    harness.advance(.milliseconds(40))
    harness.send(.probeAnswered(attempt: 1))
    #expect(harness.phase == .ready(pid: 7, since: origin + .milliseconds(40)))
  }

  @Test("mode probe: READY=1 with the mount is not enough")
  func probeIgnoresReady() {
    var harness = MachineHarness(makeSpec(readiness: .probe))
    harness.runWorker()
    harness.send(.mountAppeared)
    harness.send(.message(readyMessage))
    harness.send(.message(WorkerMessage(datagram: [UInt8(ascii: "\n")])))
    #expect(!harness.machine.isReady)
  }

  @Test("mode probe: a failed probe is remembered and does not end the attempt")
  func probeFailed() {
    var harness = MachineHarness(makeSpec(readiness: .probe))
    harness.runWorker()
    harness.send(.mountAppeared)
    #expect(harness.send(.probeFailed(attempt: 1, "Transport endpoint is not connected")) == [])
    #expect(harness.machine.starting?.lastProbeError == "Transport endpoint is not connected")
    #expect(!harness.machine.isReady)
    harness.send(.probeAnswered(attempt: 1))
    #expect(harness.machine.isReady)
  }

  @Test("mode probe: answers for an earlier attempt are ignored")
  func staleProbeAnswers() {
    var harness = MachineHarness(makeSpec(readiness: .probe))
    harness.runWorker(pid: 7)
    harness.send(.mountAppeared)
    harness.send(.exited(.exited(1), outputTail: []))
    harness.runWorker(pid: 8)
    #expect(harness.machine.attempt == 2)
    #expect(
      harness.send(.mountAppeared).actions == [
        .startProbe(
          attempt: 2, mountpoint: harness.spec.mountpoint, probePath: harness.spec.probePath)
      ])
    #expect(harness.send(.probeAnswered(attempt: 1)) == [])
    #expect(harness.send(.probeFailed(attempt: 1, "old")) == [])
    #expect(!harness.machine.isReady)
    #expect(harness.machine.starting?.lastProbeError == nil)
    harness.send(.probeAnswered(attempt: 2))
    #expect(harness.phase == .ready(pid: 8, since: harness.now))
  }

  @Test("mode probe: an answer while the mount is gone confirms only once it is back")
  func probeAnswerWithoutMount() {
    var harness = MachineHarness(makeSpec(readiness: .probe))
    harness.runWorker()
    harness.send(.mountAppeared)
    harness.send(.mountVanished)
    harness.send(.probeAnswered(attempt: 1))
    #expect(!harness.machine.isReady)
    harness.send(.mountAppeared)
    #expect(harness.machine.isReady)
  }

  @Test("probe answers outside `starting` are ignored", arguments: Stage.allCases)
  func probeAnswersElsewhere(stage: Stage) {
    guard stage != .starting, stage != .startingMounted, stage != .startingWithoutPid else {
      return
    }
    var harness = stage.harness(makeSpec(readiness: .probe))
    let before = harness.phase
    let attempt = harness.machine.attempt
    #expect(harness.send(.probeAnswered(attempt: attempt)) == [])
    #expect(harness.send(.probeFailed(attempt: attempt, "x")) == [])
    #expect(harness.phase == before)
  }

  @Test("in mode protocol a probe answer changes nothing")
  func probeAnswerInProtocolMode() {
    var harness = MachineHarness()
    harness.runWorker()
    harness.send(.mountAppeared)
    harness.send(.probeAnswered(attempt: 1))
    #expect(!harness.machine.isReady)
  }

  // MARK: Worker messages

  @Test("STATUS is kept and logged only when it changes")
  func statusKept() {
    var harness = MachineHarness()
    harness.runWorker()
    let first = harness.send(.message(datagram("STATUS=connecting")))
    #expect(first.actions == [])
    #expect(harness.machine.workerStatus == "connecting")
    #expect(harness.send(.message(datagram("STATUS=connecting"))) == [])
    harness.send(.message(datagram("STATUS=mounted")))
    #expect(harness.machine.workerStatus == "mounted")
  }

  @Test("a new attempt forgets the previous worker's STATUS")
  func statusClearedOnNewAttempt() {
    var harness = MachineHarness()
    harness.runWorker()
    harness.send(.message(datagram("STATUS=connecting")))
    harness.send(.exited(.exited(1), outputTail: []))
    harness.fireDeadline()
    #expect(harness.machine.workerStatus == nil)
  }

  @Test("ERROR and ERRNO change no phase; they become part of the failure")
  func errorAndErrno() {
    var harness = MachineHarness()
    harness.runWorker()
    let before = harness.phase
    #expect(harness.send(.message(datagram("ERROR=cannot reach nas.local"))).actions == [])
    #expect(harness.send(.message(datagram("ERRNO=113"))) == [])
    #expect(harness.phase == before)
    harness.send(.exited(.exited(1), outputTail: ["some", "output"]))
    let failure = harness.machine.lastFailure
    #expect(failure?.workerError == "cannot reach nas.local")
    #expect(failure?.errno == 113)
    #expect(failure?.outputTail == ["some", "output"])
  }

  @Test("STOPPING=1 is only noted")
  func stoppingMessage() {
    var harness = MachineHarness()
    harness.makeReady(pid: 7)
    let before = harness.phase
    #expect(harness.send(.message(datagram("STOPPING=1"))).actions == [])
    #expect(harness.phase == before)
  }

  @Test("a garbage message does nothing in any phase", arguments: Stage.allCases)
  func garbageMessage(stage: Stage) {
    var harness = stage.harness()
    let before = harness.phase
    #expect(harness.send(.message(datagram("hello\nWATCHDOG=1\n=x"))) == [])
    #expect(harness.send(.message(WorkerMessage())) == [])
    #expect(harness.phase == before)
  }

  @Test(
    "messages are ignored when no worker runs",
    arguments: [Stage.inactive, .preparing, .backoff, .exited, .failed])
  func messagesWithoutWorker(stage: Stage) {
    var harness = stage.harness()
    let before = harness.phase
    let status = harness.machine.workerStatus
    #expect(harness.send(.message(datagram("READY=1\nSTATUS=ghost\nERROR=ghost"))) == [])
    #expect(harness.phase == before)
    #expect(harness.machine.workerStatus == status)
  }

  // MARK: mountAppeared / mountVanished elsewhere

  @Test(
    "mountAppeared and mountVanished outside starting/ready are ignored",
    arguments: [
      Stage.inactive, .preparing, .backoff, .stopping, .exited, .failed,
    ])
  func mountEventsElsewhere(stage: Stage) {
    var harness = stage.harness()
    let before = harness.phase
    #expect(harness.send(.mountAppeared) == [])
    #expect(harness.send(.mountVanished) == [])
    #expect(harness.phase == before)
  }

  // MARK: Attempts and restarts

  @Test("attempts count every start, restarts every start after the first")
  func attemptCounters() {
    var harness = MachineHarness()
    harness.failStart()
    harness.failStart()
    harness.makeReady()
    #expect(harness.machine.attempt == 3)
    #expect(harness.machine.restarts == 2)
  }

  // MARK: Timer

  @Test("a timer that fires before the deadline does nothing", arguments: Stage.allCases)
  func earlyTimer(stage: Stage) {
    var harness = stage.harness()
    let before = harness.phase
    if let deadline = harness.machine.deadline {
      harness.now = deadline + .nanoseconds(-1)
    } else {
      harness.advance(.seconds(3600))
    }
    #expect(harness.send(.timerFired) == [])
    #expect(harness.phase == before)
  }
}
