import MountConfig
import Testing

@testable import MountCore

@Suite("MountMachine: what a start finds at its mountpoint, and late answers")
struct MountSiteTests {
  /// A machine that has begun attempt 1 and waits for the mountpoint's inspection.
  func inspecting(_ spec: MountSpec = makeSpec()) -> MachineHarness {
    var harness = MachineHarness(spec)
    harness.send(.start)
    return harness
  }

  @Test("an empty mountpoint is created, for the worker's user, and then the worker spawned")
  func emptyMountpoint() {
    var spec = makeSpec()
    spec.user = "alice"
    var harness = inspecting(spec)
    let effects = harness.send(.mountpointInspected(attempt: 1, .empty))
    #expect(effects == [.createMountpoint(attempt: 1, mountpoint: "/mnt/photos", user: "alice")])
    #expect(harness.send(.prepared(attempt: 1)) == [.spawn(attempt: 1, spec)])
  }

  @Test("a non-FUSE mount is never touched: the start fails, naming it")
  func otherMount() {
    var harness = inspecting()
    let effects = harness.send(
      .mountpointInspected(attempt: 1, .other(fsType: "tmpfs", source: "none")))
    #expect(effects.actions == [])
    #expect(harness.machine.isInBackoff)
    let summary = harness.machine.lastFailure?.summary ?? ""
    #expect(summary.contains("a tmpfs mount (none) is already at /mnt/photos"))
  }

  @Test("a live FUSE mount of someone else is left alone: the start fails, naming it")
  func foreignMount() {
    var harness = inspecting()
    harness.send(
      .mountpointInspected(attempt: 1, .fuse(fsType: "fuse.sshfs", source: "h:", server: .foreign)))
    let summary = harness.machine.lastFailure?.summary ?? ""
    #expect(
      summary.contains("a live FUSE mount (fuse.sshfs, h:) that this supervisor did not start"))
    #expect(summary.contains("umount /mnt/photos"))
  }

  @Test("a FUSE mount whose statfs fails otherwise is left alone")
  func failingMount() {
    var harness = inspecting()
    harness.send(
      .mountpointInspected(
        attempt: 1, .fuse(fsType: "fuse", source: "x", server: .failing(reason: "I/O error"))))
    #expect(harness.machine.lastFailure?.summary.contains("fails statfs with I/O error") == true)
  }

  @Test("a dead FUSE mount is detached and the mountpoint looked at again")
  func deadMount() {
    var harness = inspecting()
    let effects = harness.send(
      .mountpointInspected(
        attempt: 1,
        .fuse(fsType: "fuse", source: "x", server: .gone(reason: "Transport endpoint"))))
    #expect(
      effects.actions == [
        .detachStaleMount(attempt: 1, mountpoint: "/mnt/photos"),
        .inspectMountpoint(attempt: 1, mountpoint: "/mnt/photos"),
      ])
    #expect(harness.machine.isPreparing)
  }

  @Test("leftover workers of an earlier run are killed before their mount is detached")
  func leftoverWorkers() {
    var harness = inspecting()
    let effects = harness.send(
      .mountpointInspected(
        attempt: 1, .fuse(fsType: "fuse", source: "x", server: .leftover(pids: [41, 42]))))
    #expect(
      effects.actions == [
        .endLeftoverWorkers(pids: [41, 42]),
        .detachStaleMount(attempt: 1, mountpoint: "/mnt/photos"),
        .inspectMountpoint(attempt: 1, mountpoint: "/mnt/photos"),
      ])
  }

  @Test("a mount that comes back after every detach fails the attempt")
  func mountThatComesBack() {
    var harness = inspecting()
    let dead = MountSite.fuse(fsType: "fuse", source: "x", server: .gone(reason: "gone"))
    for _ in 1...MountMachine.inspectionLimit {
      #expect(harness.send(.mountpointInspected(attempt: 1, dead)).actions.count == 2)
    }
    harness.send(.mountpointInspected(attempt: 1, dead))
    #expect(harness.machine.isInBackoff)
    #expect(harness.machine.lastFailure?.summary.contains("came back") == true)
  }

  @Test("an inspection for another attempt is ignored")
  func staleInspection() {
    var harness = inspecting()
    #expect(harness.send(.mountpointInspected(attempt: 7, .empty)) == [])
    #expect(harness.machine.isPreparing)
  }

  // MARK: Deadlines are facts

  @Test("a READY read after the deadline is a timeout, even when the timer has not been seen yet")
  func lateReady() {
    var harness = MachineHarness(makeSpec(startTimeout: .seconds(10)))
    harness.runWorker(pid: 7)
    harness.send(.mountAppeared)
    harness.advance(.seconds(10) + .milliseconds(1))
    let effects = harness.send(.message(readyMessage))
    #expect(effects.actions == [.cancelProbe, .signal(9), .detachMount])
    #expect(!harness.machine.isReady)
    #expect(harness.machine.stopping?.stage == .killing)
    #expect(harness.send(.timerFired).actions == [], "the timer that follows changes nothing")
  }

  @Test("a READY read just before the deadline confirms the mount")
  func readyInTime() {
    var harness = MachineHarness(makeSpec(startTimeout: .seconds(10)))
    harness.runWorker(pid: 7)
    harness.send(.mountAppeared)
    harness.advance(.seconds(10) - .nanoseconds(1))
    harness.send(.message(readyMessage))
    #expect(harness.machine.isReady)
  }

  @Test("an exit read after the deadline is handled after the timeout, not lost")
  func lateExit() {
    var harness = MachineHarness(makeSpec(startTimeout: .seconds(1)))
    harness.runWorker(pid: 7)
    harness.advance(.seconds(2))
    harness.send(.exited(.signaled(9), outputTail: []))
    #expect(harness.machine.isInBackoff)
    #expect(harness.machine.lastFailure?.summary.contains("no confirmed FUSE init") == true)
  }
}

@Suite("SupervisorCore at scale")
struct SupervisorCoreScaleTests {
  @Test("5,000 mounts, nested in chains, start, become READY and shut down without recursion")
  func manyMounts() {
    var specs: [MountSpec] = []
    for index in 0..<5000 {
      // Every tenth mount nests the next nine in a chain: /mnt/m0, /mnt/m0/m1, ...
      let chain = index / 10
      let depth = index % 10
      let path = "/mnt/c\(chain)" + (0..<depth).map { "/d\($0)" }.joined()
      specs.append(makeSpec("m\(index)", mountpoint: path))
    }
    var harness = CoreHarness(specs)
    var pending = harness.begin().compactMap(\.inspectedMount)
    var pid: Int32 = 1
    var announced = false
    while let name = pending.popLast() {
      pid += 1
      let effects = harness.makeReady(name, pid: pid)
      pending += effects.compactMap(\.inspectedMount)
      announced = announced || effects.announcesReady
    }
    #expect(announced)
    #expect(harness.core.statusLine == "5000/5000 mounts ready")
    var stopping = harness.core.shutdown(now: harness.now)
    var exits: [Int32] = []
    while true {
      let unmounted = stopping.compactMap { effect -> String? in
        if case .mount(let name, .unmount) = effect { return name }
        return nil
      }
      exits += stopping.exitCodes
      guard !unmounted.isEmpty else { break }
      stopping = unmounted.flatMap { harness.exit($0) }
    }
    #expect(exits == [0])
  }
}

extension SupervisorCore.Effect {
  /// The mount whose mountpoint is to be inspected: the first step of a start.
  fileprivate var inspectedMount: String? {
    if case .mount(let name, .inspectMountpoint) = self { return name }
    return nil
  }
}

@Suite("MountMachine: a mount another running supervisor serves")
struct OtherSupervisorTests {
  @Test("it is refused, naming that supervisor, and never cleared")
  func refused() {
    var harness = MachineHarness()
    harness.send(.start)
    let effects = harness.send(
      .mountpointInspected(
        attempt: 1, .fuse(fsType: "fuse.sshfs", source: "h:", server: .otherSupervisor(pid: 77))))
    #expect(effects.actions == [])
    #expect(
      harness.machine.lastFailure?.summary.contains("another running mountsupd (pid 77)") == true)
  }
}

@Suite("MountMachine: the start timeout is the worker's")
struct SpawnDeadlineTests {
  @Test("the start timeout counts from the spawn, not from the wait for a turn to spawn")
  func deadlineFromTheSpawn() {
    var harness = MachineHarness(makeSpec(startTimeout: .seconds(10)))
    harness.send(.start)
    harness.send(.prepared(attempt: 1))
    harness.advance(.seconds(4))
    harness.send(.spawned(pid: 9))
    #expect(harness.machine.deadline == harness.now + .seconds(10))
  }

  @Test("a worker spawned after its attempt's deadline is recorded, then ended by the timeout")
  func spawnedAfterTheDeadline() {
    var harness = MachineHarness(makeSpec(startTimeout: .seconds(1)))
    harness.send(.start)
    harness.send(.prepared(attempt: 1))
    harness.advance(.seconds(2))
    // The preparing deadline has passed; the spawn still counts from now.
    let effects = harness.send(.spawned(pid: 9))
    #expect(effects.actions == [])
    #expect(harness.machine.pid == 9, "the worker is known, never orphaned")
  }
}

@Suite("SupervisorCore: the status line")
struct StatusLineTests {
  @Test("a mount that flaps between ready and not ready does not crowd the others out")
  func flappingMount() {
    let names = ["a", "b", "c", "d", "e", "f", "g"]
    var harness = CoreHarness(
      names.map { makeSpec($0, startTimeout: .seconds(600), startLimitBurst: 100) })
    harness.begin()
    for round in 0..<8 {
      harness.makeReady("a", pid: Int32(100 + round))
      harness.advance(.seconds(1))
      harness.exit("a", .signaled(9))
      harness.fireTimers()
    }
    let line = harness.core.statusLine
    #expect(line.hasPrefix("0/7 mounts ready; a: starting"), "\(line)")
    for name in ["b", "c", "d", "e"] { #expect(line.contains("; \(name): starting"), "\(line)") }
    #expect(line.hasSuffix("and 2 more not ready"), "\(line)")
  }
}
