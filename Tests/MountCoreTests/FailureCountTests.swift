import MountConfig
import Testing

@testable import MountCore

/// The failure counters and the time to ready behind the metrics (docs/metrics.md).
@Suite("MountMachine: failures counted by kind, time to ready")
struct FailureCountTests {
  @Test("each kind of failure counted once; a clean exit that restart = always restarts is none")
  func countsByKind() {
    var harness = MachineHarness(makeSpec(restart: .always, startLimitBurst: 100))
    harness.advance(.milliseconds(5))
    harness.makeReady()
    #expect(harness.machine.lastTimeToReady == .zero)

    harness.send(.exited(.signaled(9), outputTail: []))
    harness.runWorker()
    harness.advance(.milliseconds(30))
    harness.send(.mountAppeared)
    harness.send(.message(readyMessage))
    #expect(harness.machine.isReady)
    #expect(harness.machine.lastTimeToReady == .milliseconds(30))

    harness.send(.exited(.exited(0), outputTail: []))
    harness.runWorker()
    harness.send(.exited(.exited(3), outputTail: []))
    harness.runWorker()
    harness.fireDeadline()
    harness.send(.exited(.signaled(9), outputTail: []))
    harness.runWorker()
    harness.send(.mountAppeared)
    harness.send(.message(readyMessage))
    harness.send(.mountVanished)
    harness.send(.exited(.signaled(15), outputTail: []))
    harness.send(.start)
    harness.send(.prepared(attempt: harness.machine.attempt))
    harness.send(.spawnFailed(Failure(summary: "no such command")))

    #expect(
      harness.machine.failureCounts == [
        .signal: 1, .exit: 1, .timeout: 1, .vanished: 1, .start: 1,
      ])
    #expect(harness.machine.lastFailure?.kind == .start)
  }
}
