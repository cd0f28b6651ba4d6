import MountConfig
import Testing

@testable import MountCore

@Suite("MountMachine: a held FUSE connection is resumed after a crash, or ended")
struct MountMachineResumeTests {
  /// A ready worker whose connection the runtime holds.
  func holding(_ spec: MountSpec = makeSpec(restartDelay: .zero)) -> MachineHarness {
    var harness = MachineHarness(spec)
    harness.makeReady()
    harness.send(.connectionHeld)
    #expect(harness.machine.holdsConnection)
    return harness
  }

  @Test("a crash keeps the mount and starts a successor on the connection, without preparing")
  func crashIsResumed() {
    var harness = holding()
    let crash = harness.send(.exited(.signaled(9), outputTail: []))
    #expect(crash.actions == [], "no detach: the mount stays for the successor")
    #expect(harness.phase == .backoff(until: harness.now))
    let start = harness.fireDeadline()
    #expect(start.actions == [.resume(attempt: 2, harness.spec)])
    guard case .starting(_, _, let starting) = harness.phase else {
      Issue.record("not starting: \(harness.phase)")
      return
    }
    #expect(starting.mountSeen && starting.resuming)
    harness.send(.spawned(pid: 200))
    harness.advance(.milliseconds(6))
    harness.send(.message(readyMessage))
    #expect(harness.machine.isReady)
    #expect(harness.machine.resumes == 1)
    #expect(harness.machine.lastResumeGap == .milliseconds(6))
    #expect(harness.machine.holdsConnection)
  }

  @Test("a successor that exits before READY ends the resume: released, detached, started anew")
  func failedSuccessorEndsTheResume() {
    var harness = holding()
    harness.send(.exited(.signaled(9), outputTail: []))
    harness.fireDeadline()
    harness.send(.spawned(pid: 200))
    let exit = harness.send(.exited(.exited(1), outputTail: ["broken"]))
    #expect(exit.actions == [.cancelProbe, .releaseConnection, .detachMount])
    #expect(!harness.machine.holdsConnection)
    let next = harness.fireDeadline()
    #expect(next.actions == [.inspectMountpoint(attempt: 3, mountpoint: harness.spec.mountpoint)])
  }

  @Test("a successor that cannot be spawned ends the resume")
  func successorSpawnFails() {
    var harness = holding()
    harness.send(.exited(.signaled(9), outputTail: []))
    harness.fireDeadline()
    let failed = harness.send(.spawnFailed(Failure(summary: "cannot start")))
    #expect(failed.actions == [.releaseConnection, .detachMount])
    #expect(!harness.machine.holdsConnection)
  }

  @Test("a successor that sends no READY within start_timeout is killed and the mount ended")
  func silentSuccessorTimesOut() {
    var harness = holding()
    harness.send(.exited(.signaled(9), outputTail: []))
    harness.fireDeadline()
    harness.send(.spawned(pid: 200))
    harness.advance(harness.spec.startTimeout)
    let timeout = harness.fireDeadline()
    #expect(timeout.actions == [.cancelProbe, .signal(9), .releaseConnection, .detachMount])
  }

  @Test("when the policy gives up after a crash, the connection is released and the mount detached")
  func policyGivesUp() {
    var harness = holding(makeSpec(restart: .never))
    let crash = harness.send(.exited(.signaled(9), outputTail: []))
    #expect(crash.actions == [.releaseConnection, .detachMount])
    #expect(harness.machine.isFailed)
  }

  @Test("a stop while a successor is awaited ends the held mount")
  func stopDuringBackoff() {
    var harness = holding(makeSpec(restartDelay: .seconds(5)))
    harness.send(.exited(.signaled(9), outputTail: []))
    let stop = harness.send(.stop)
    #expect(stop.actions == [.releaseConnection, .detachMount])
    #expect(harness.machine.state == .stopped)
  }

  @Test("a restart while a successor is awaited (a reload changed the spec) starts anew")
  func restartDuringBackoff() {
    var harness = holding(makeSpec(restartDelay: .seconds(5)))
    harness.send(.exited(.signaled(9), outputTail: []))
    let restart = harness.send(.restart)
    #expect(
      restart.actions == [
        .releaseConnection, .detachMount,
        .inspectMountpoint(attempt: 2, mountpoint: harness.spec.mountpoint),
      ])
  }

  @Test("a clean stop of a worker that handed over its connection releases it")
  func cleanStopReleases() {
    var harness = holding()
    #expect(harness.send(.stop).actions == [.unmount])
    let exit = harness.send(.exited(.exited(0), outputTail: []))
    #expect(exit.actions == [.releaseConnection, .detachMount])
  }

  @Test("FUSE_INIT is read from the handover datagram; FUSE_HAS_RESEND from its flags")
  func initRequestParsing() {
    var request = [UInt8](repeating: 0, count: 104)
    request[52 + 3] = 0x40  // flags: FUSE_INIT_EXT (bit 30)
    request[56] = 0x80  // flags2: FUSE_HAS_RESEND (bit 39)
    let hex = request.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    let message = datagram("FUSE_CONNECTION=1\nFUSE_INIT=\(hex)")
    #expect(message.fuseInit == request)
    #expect(WorkerMessage.initOffersResend(request))
    request[56] = 0
    #expect(!WorkerMessage.initOffersResend(request))
    #expect(datagram("FUSE_INIT=xyz").fuseInit == nil)
  }
}
