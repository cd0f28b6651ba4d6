import MountConfig
import Testing

@testable import MountCore

@Suite("MountMachine: hung servers and mountctl abort")
struct MountMachineHangTests {
  func readyHarness(
    hangTimeout: Duration = .seconds(60), restart: RestartPolicy = .onFailure,
    startLimitBurst: Int = 5
  ) -> MachineHarness {
    var spec = makeSpec(
      restart: restart, stopTimeout: .seconds(3), startLimitBurst: startLimitBurst)
    spec.hangTimeout = hangTimeout
    var harness = MachineHarness(spec)
    harness.makeReady()
    return harness
  }

  @Test("requests waiting start one probe; an answer, however slow, clears it")
  func slowAnswerIsNoHang() {
    var harness = readyHarness()
    let attempt = harness.machine.attempt
    #expect(
      harness.send(.requestsWaiting(3)).actions == [
        .startHangProbe(attempt: attempt, mountpoint: "/mnt/photos", probePath: nil)
      ])
    #expect(harness.machine.deadline == harness.now + .seconds(60))
    harness.advance(.seconds(20))
    #expect(harness.send(.requestsWaiting(5)).isEmpty, "one probe at a time")
    #expect(harness.machine.hangCheck?.waiting == 5)
    harness.advance(.seconds(39))
    #expect(harness.send(.hangProbeAnswered(attempt: attempt)).isEmpty)
    #expect(harness.machine.isReady && harness.machine.deadline == nil)
    #expect(harness.machine.hangs == 0)
  }

  @Test("a probe unanswered for hang_timeout: abort, SIGTERM and SIGCONT, then the policy")
  func unansweredProbeIsAHang() {
    var harness = readyHarness()
    let attempt = harness.machine.attempt
    harness.send(.requestsWaiting(2))
    harness.advance(.seconds(1))
    harness.send(.hangProbeStep(attempt: attempt, "stat of /mnt/photos/probe"))
    harness.send(.requestsWaiting(14))
    let effects = harness.fireDeadline()
    #expect(effects.actions == [.cancelHangProbe, .abortConnection, .signal(15), .signal(18)])
    let summary =
      "hung: stat of /mnt/photos/probe unanswered for 1m, 14 requests waiting; "
      + "connection aborted, worker killed"
    #expect(effects.contains(.log(.error, summary)))
    #expect(harness.machine.hangs == 1)
    #expect(harness.machine.stopping?.stage == .terminating)

    // SIGKILL after stop_timeout, then the exit: detached, and a restart after the delay.
    #expect(harness.fireDeadline().actions == [.signal(9), .detachMount])
    let exit = harness.send(.exited(.signaled(9), outputTail: ["serving"]))
    #expect(exit.actions == [.detachMount])
    #expect(harness.machine.isInBackoff)
    #expect(harness.machine.lastFailure?.summary == summary)
    harness.runWorker(pid: 101)
    #expect(harness.machine.restarts == 1)
  }

  @Test("a hang counts for the start limit")
  func hangsCountForTheStartLimit() {
    // Both hangs within start_limit_interval (60 s).
    var harness = readyHarness(hangTimeout: .seconds(5), startLimitBurst: 2)
    for pid: Int32 in [101, 102] {
      harness.send(.requestsWaiting(1))
      harness.fireDeadline()
      harness.send(.exited(.exited(1), outputTail: []))
      if pid == 102 { break }
      harness.fireDeadline()
      harness.send(.prepared(attempt: harness.machine.attempt))
      harness.send(.spawned(pid: pid))
      harness.send(.mountAppeared)
      harness.send(.message(readyMessage))
      #expect(harness.machine.isReady)
    }
    #expect(harness.machine.failure?.summary.hasPrefix("start limit reached") == true)
    #expect(harness.machine.hangs == 2)
  }

  @Test("hang_timeout = 0 turns the check off; reports outside ready are ignored")
  func offAndOutOfPhase() {
    var off = readyHarness(hangTimeout: .zero)
    #expect(off.send(.requestsWaiting(10)).isEmpty && off.machine.hangCheck == nil)

    var starting = MachineHarness()
    starting.runWorker()
    #expect(starting.send(.requestsWaiting(10)).isEmpty)
  }

  @Test("answers and steps of an earlier worker's probe change nothing")
  func staleProbe() {
    var harness = readyHarness()
    let first = harness.machine.attempt
    harness.send(.requestsWaiting(1))
    harness.send(.exited(.exited(1), outputTail: []))
    harness.fireDeadline()
    harness.send(.prepared(attempt: harness.machine.attempt))
    harness.send(.spawned(pid: 101))
    harness.send(.mountAppeared)
    harness.send(.message(readyMessage))
    #expect(harness.machine.isReady && harness.machine.deadline == nil, "no check carried over")
    harness.send(.requestsWaiting(1))
    harness.send(.hangProbeAnswered(attempt: first))
    #expect(harness.machine.hangCheck != nil, "the old probe's answer is not the new one's")
  }

  @Test("no thread for a probe: said, and tried again at the next check")
  func noProbeThread() {
    var harness = readyHarness()
    let attempt = harness.machine.attempt
    harness.send(.requestsWaiting(1))
    let said = harness.send(.hangProbeUnavailable(attempt: attempt, "no thread left"))
    #expect(said.contains { if case .log(.warning, _) = $0 { true } else { false } })
    #expect(harness.machine.deadline == nil)
    #expect(harness.send(.requestsWaiting(1)).actions.count == 1)
  }

  @Test("mountctl abort ends a ready or starting worker the same way; otherwise nothing")
  func operatorAbort() {
    var ready = readyHarness()
    let effects = ready.send(.abort)
    #expect(effects.actions == [.cancelHangProbe, .abortConnection, .signal(15), .signal(18)])
    #expect(ready.machine.stopping != nil && ready.machine.hangs == 0)
    ready.send(.exited(.exited(0), outputTail: []))
    #expect(ready.machine.lastFailure?.summary.hasPrefix("aborted by an operator") == true)
    #expect(ready.machine.isInBackoff, "restarted by the policy")

    var starting = MachineHarness()
    starting.runWorker()
    #expect(
      starting.send(.abort).actions == [
        .cancelProbe, .cancelHangProbe, .abortConnection, .signal(15), .signal(18),
      ])

    var idle = MachineHarness()
    #expect(idle.send(.abort).isEmpty)
  }
}
