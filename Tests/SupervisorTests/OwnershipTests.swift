import Foundation
import Glibc
import MountSupTestSupport
import Testing

/// Whose a mount at a mountpoint is: a live supervisor's workers are never touched; the workers
/// of one that died are ended, even when stopped, and their mounts detached.
@Suite struct OwnershipTests {
  @Test("a second supervisor refuses a mount whose worker's helper belongs to a live one")
  func anotherLiveSupervisorsWorkerIsNeverTouched() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let mountpoint = "\(sandbox.path)/shared"
    // Like sshfs's ssh: a helper of the worker, not a child of the supervisor.
    let first = try sandbox.startDaemon(
      mountSection(
        "shared", at: mountpoint,
        command: ["/bin/sh", "-c", "sleep 1000 & exec \"$0\" \"$@\"", testWorker, "{mountpoint}"]))
    defer { first.daemon.stop() }
    #expect(first.notify.wait { $0.contains("READY=1") } != nil, "log:\n\(first.daemon.log)")
    let servedBy = try #require(first.daemon.workerPIDs(matching: mountpoint).first)

    let other = try Sandbox()
    defer { other.cleanUp() }
    let second = try other.startDaemon(
      mountSection("shared", at: mountpoint, ["restart": "\"never\""]))
    defer { second.daemon.stop() }
    #expect(second.daemon.exitCode() == 1, "log:\n\(second.daemon.log)")
    #expect(
      second.daemon.log.contains("another running mountsupd (pid \(first.daemon.pid))"),
      "log:\n\(second.daemon.log)")
    #expect(kill(servedBy, 0) == 0, "the first supervisor's worker still runs")
    #expect(first.daemon.workerPIDs(matching: mountpoint) == [servedBy])
    #expect(fuseMount(at: mountpoint) != nil, "and its mount is still there")
  }

  @Test("a stopped worker of a supervisor that was killed is ended, and the mount started again")
  func aHungLeftoverOfADeadSupervisorIsReplaced() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let mountpoint = "\(sandbox.path)/data"
    let config = mountSection("data", at: mountpoint)
    let first = try sandbox.startDaemon(config)
    #expect(first.notify.wait { $0.contains("READY=1") } != nil, "log:\n\(first.daemon.log)")
    let leftover = try #require(first.daemon.workerPIDs(matching: mountpoint).first)
    defer { kill(leftover, SIGKILL) }
    kill(leftover, SIGSTOP)
    first.daemon.signal(SIGKILL)
    _ = first.daemon.exitCode()
    #expect(kill(leftover, 0) == 0, "stopped, it outlives its supervisor")

    let other = try Sandbox()
    defer { other.cleanUp() }
    let second = try other.startDaemon(config)
    defer { second.daemon.stop() }
    #expect(second.notify.wait { $0.contains("READY=1") } != nil, "log:\n\(second.daemon.log)")
    #expect(
      second.daemon.log.contains(
        "a worker left by an earlier run of the supervisor (pid \(leftover))"),
      "log:\n\(second.daemon.log)")
    #expect(eventually { kill(leftover, 0) != 0 }, "the leftover was ended")
    let served = try String(contentsOfFile: mountpoint + "/hello", encoding: .utf8)
    #expect(!served.isEmpty, "the new worker serves the mount")
  }
}

@Suite struct SymlinkedMountpointTests {
  @Test("a mountpoint reached through a symlink confirms, and leaves nothing behind")
  func mountpointThroughASymlink() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    mkdir("\(sandbox.path)/real", 0o755)
    symlink("\(sandbox.path)/real", "\(sandbox.path)/link")
    let (notify, daemon) = try sandbox.startDaemon(
      mountSection("linked", at: "\(sandbox.path)/link/x"))
    #expect(notify.wait { $0.contains("READY=1") } != nil, "log:\n\(daemon.log)")
    #expect(fuseMount(at: "\(sandbox.path)/real/x") != nil, "mounted at the real path")
    #expect(daemon.stop() == 0)
    #expect(fuseMount(at: "\(sandbox.path)/real/x") == nil, "a mount was left behind")
  }
}
