import Foundation
import Glibc
import MountSupTestSupport
import Testing

@testable import MountRuntime

/// The incremental mount table against real mounts, through both mechanisms. Every mount is made
/// in a sandbox of the test's own and undone on every path; no other mount is touched.
@Suite(.serialized) struct MountTableTests {
  static let mechanisms: [MountTable.Mechanism] = [.fanotify, .mountinfo]

  @Test(arguments: mechanisms)
  func followsTmpfsMountsStackedAtAPathWithASpace(_ mechanism: MountTable.Mechanism) throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let table = try MountTable(mechanism: mechanism)
    #expect(table.mechanism == mechanism)
    #expect(table.count > 0)
    // A space and a backslash: mountinfo escapes both (\040, \134), statmount does not.
    let path = "\(sandbox.path)/with space\\and backslash"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    var mounted = 0
    defer { for _ in 0..<mounted { umount2(path, Int32(MNT_DETACH)) } }

    try mountTmpfs(source: "bottom source", at: path)
    mounted += 1
    let bottom = try #require(
      waitForChanges(table) { $0.attached.contains { $0.mountpoint == path } }.attached.first {
        $0.mountpoint == path
      })
    #expect(bottom.fsType == "tmpfs")
    #expect(bottom.source == "bottom source")
    #expect(!bottom.isFUSE)
    #expect(bottom.owner == nil)
    #expect(try device(of: path) == (bottom.deviceMajor, bottom.deviceMinor))
    #expect(table.mounts(at: path) == [bottom])
    #expect(table.entry(id: bottom.id) == bottom)

    try mountTmpfs(source: "top", at: path)
    mounted += 1
    let top = try #require(
      waitForChanges(table) { $0.attached.contains { $0.source == "top" } }.attached.first {
        $0.source == "top"
      })
    #expect(top.mountpoint == path)
    #expect(top.parentID == bottom.id)
    #expect(table.mounts(at: path) == [bottom, top])
    #expect(table.fuseMounts(at: path).isEmpty)

    #expect(umount2(path, 0) == 0)
    mounted -= 1
    _ = waitForChanges(table) { $0.detached.contains(top) }
    #expect(table.mounts(at: path) == [bottom])
    // mountinfo's IDs are reused: a mount of a parallel test may hold the number already.
    #expect(table.entry(id: top.id) != top)

    #expect(umount2(path, 0) == 0)
    mounted -= 1
    _ = waitForChanges(table) { $0.detached.contains(bottom) }
    #expect(table.mounts(at: path).isEmpty)
    #expect(table.entry(id: bottom.id) != bottom)
    // Mounts of other tests may come and go meanwhile; of this test's, nothing is left to report.
    #expect(!table.readChanges().contains { $0.entry.mountpoint.hasPrefix(sandbox.path) })
  }

  @Test(arguments: mechanisms)
  func seesAFUSEMountWithItsOwnerAndConnection(_ mechanism: MountTable.Mechanism) throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let table = try MountTable(mechanism: mechanism)
    let path = "\(sandbox.path)/fuse mount"
    let worker = try startForeignWorker(at: path)
    defer {
      worker.terminate()
      umount2(path, Int32(MNT_DETACH))
      worker.waitUntilExit()
    }

    let mount = try #require(
      waitForChanges(table) { $0.attached.contains { $0.mountpoint == path } }.attached.first {
        $0.mountpoint == path
      })
    #expect(mount.isFUSE)
    #expect(mount.fsType == "fuse.mountsup-testworker")
    #expect(mount.source == "mountsup-testworker")
    #expect(mount.owner == MountOwner(superOptions: "user_id=\(getuid()),group_id=\(getgid())"))
    // The minor is the connection's number under /sys/fs/fuse/connections.
    #expect(try device(of: path) == (mount.deviceMajor, mount.deviceMinor))
    #expect(table.fuseMounts(at: path) == [mount])

    #expect(umount2(path, Int32(MNT_DETACH)) == 0)
    _ = waitForChanges(table) { $0.detached.contains(mount) }
    #expect(table.fuseMounts(at: path).isEmpty)
  }

  /// A mount slipped beneath another (MOVE_MOUNT_BENEATH) becomes its parent without an event.
  @Test(arguments: mechanisms)
  func aMountSlippedBeneathIsBelow(_ mechanism: MountTable.Mechanism) throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let table = try MountTable(mechanism: mechanism)
    let path = "\(sandbox.path)/stack"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    try mountTmpfs(source: "top", at: path)
    defer { umount2(path, Int32(MNT_DETACH)) }
    _ = waitForChanges(table) { $0.attached.contains { $0.mountpoint == path } }

    try mountTmpfsBeneath(source: "beneath", at: path)
    defer { umount2(path, Int32(MNT_DETACH)) }
    let changes = waitForChanges(table) { $0.attached.contains { $0.source == "beneath" } }
    #expect(!changes.detached.contains { $0.mountpoint == path }, "a reparent is no change")
    let stack = table.mounts(at: path)
    #expect(stack.map(\.source) == ["beneath", "top"])
    #expect(stack.count == 2 && stack[1].parentID == stack[0].id)

    #expect(umount2(path, 0) == 0)
    let top = waitForChanges(table) { $0.detached.contains { $0.mountpoint == path } }
    #expect(top.detached.filter { $0.mountpoint == path }.map(\.source) == ["top"])
    #expect(table.mounts(at: path).map(\.source) == ["beneath"])
  }

  /// A move reports only the moved mount; the mounts below it change path silently.
  @Test(arguments: mechanisms)
  func aMovedMountTakesTheMountsBelowItAlong(_ mechanism: MountTable.Mechanism) throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let table = try MountTable(mechanism: mechanism)
    let from = "\(sandbox.path)/from"
    let to = "\(sandbox.path)/to"
    for directory in [from, to] {
      try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }
    try mountTmpfs(source: "outer", at: from)
    defer { umount2(from, Int32(MNT_DETACH)) }
    try FileManager.default.createDirectory(
      atPath: from + "/sub", withIntermediateDirectories: true)
    try mountTmpfs(source: "inner", at: from + "/sub")
    _ = waitForChanges(table) { $0.attached.contains { $0.source == "inner" } }

    #expect(mount(from, to, nil, UInt(MS_MOVE), nil) == 0)
    defer { umount2(to, Int32(MNT_DETACH)) }
    _ = waitForChanges(table) { changes in
      changes.attached.contains { $0.mountpoint == to + "/sub" }
    }
    #expect(table.mounts(at: from).isEmpty)
    #expect(table.mounts(at: from + "/sub").isEmpty)
    #expect(table.mounts(at: to).map(\.source) == ["outer"])
    #expect(table.mounts(at: to + "/sub").map(\.source) == ["inner"])

    #expect(umount2(to, Int32(MNT_DETACH)) == 0)
    let gone = waitForChanges(table) { changes in
      changes.detached.filter { $0.mountpoint.hasPrefix(sandbox.path) }.count >= 2
    }
    #expect(
      Set(gone.detached.filter { $0.mountpoint.hasPrefix(sandbox.path) }.map(\.source))
        == ["outer", "inner"])
    #expect(table.mounts(at: to + "/sub").isEmpty)
  }

  /// Past the fanotify queue's limit the kernel drops events and says so; the table then
  /// compares itself with a fresh listing, so even a lost detach is reported.
  @Test func anOverflowedEventQueueIsMadeGoodByAReload() throws {
    let limit =
      Int(
        readFile("/proc/sys/fs/fanotify/max_queued_events")?.trimmingCharacters(
          in: .whitespacesAndNewlines) ?? "") ?? 0
    try #require(limit > 0 && limit <= 100_000, "queue limit \(limit) is too large to overflow")
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let leaver = "\(sandbox.path)/leaver"
    let churn = "\(sandbox.path)/churn"
    let survivor = "\(sandbox.path)/survivor"
    for directory in [leaver, churn, survivor] {
      try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }
    try mountTmpfs(source: "leaver", at: leaver)
    defer { umount2(leaver, Int32(MNT_DETACH)) }
    let table = try MountTable(mechanism: .fanotify)
    let gone = try #require(table.mounts(at: leaver).first)

    // Two events per cycle, read by nobody meanwhile.
    for _ in 0..<(limit / 2 + 100) {
      try mountTmpfs(source: "churn", at: churn)
      umount2(churn, 0)
    }
    #expect(umount2(leaver, 0) == 0)
    try mountTmpfs(source: "survivor", at: survivor)
    defer { umount2(survivor, Int32(MNT_DETACH)) }

    let changes = waitForChanges(table) { changes in
      changes.attached.contains { $0.mountpoint == survivor }
    }
    #expect(changes.detached.contains(gone))
    #expect(table.mounts(at: leaver).isEmpty)
    #expect(table.mounts(at: churn).isEmpty)
    let fresh = try MountTable(mechanism: .fanotify)
    #expect(table.mounts(at: survivor) == fresh.mounts(at: survivor))
  }

  /// Both mechanisms describe the mounts that stay put alike (the IDs aside).
  @Test func bothMechanismsAgreeOnTheCurrentTable() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let path = "\(sandbox.path)/agree\there"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    try mountTmpfs(source: "", at: path)
    defer { umount2(path, Int32(MNT_DETACH)) }
    try mountTmpfs(source: "second one", at: path)
    defer { umount2(path, Int32(MNT_DETACH)) }

    let first = try MountTable(mechanism: .mountinfo)
    let events = try MountTable(mechanism: .fanotify)
    let second = try MountTable(mechanism: .mountinfo)
    // Mounts of tests running in parallel may come and go meanwhile: compare the paths that
    // were the same before and after.
    let paths = Set(mountTable().map(\.mountpoint)).filter {
      describe(first.mounts(at: $0)) == describe(second.mounts(at: $0))
    }
    #expect(paths.contains(path))
    for path in paths {
      #expect(describe(events.mounts(at: path)) == describe(first.mounts(at: path)), "at \(path)")
    }
    #expect(describe(events.mounts(at: path)).map(\.source) == ["", "second one"])
  }

  /// `MOUNTSUP_MOUNT_TABLE=mountinfo` makes the daemon use the fallback, and it still works.
  @Test func theEnvironmentForcesTheFallbackOnTheDaemon() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let notify = try NotifyReceiver(in: sandbox)
    let config = try sandbox.writeConfig(mountSection("fallback", at: "\(sandbox.path)/fall back"))
    let daemon = try Spawned(
      [daemonBinary, "--config", config], outputPath: sandbox.path + "/daemon.out",
      errorPath: sandbox.path + "/daemon.log",
      environment: ["NOTIFY_SOCKET": notify.path, "MOUNTSUP_MOUNT_TABLE": "mountinfo"])
    defer {
      if !daemon.poll() {
        kill(daemon.pid, SIGTERM)
        if !daemon.waitBlocking(timeout: .seconds(20)) {
          kill(daemon.pid, SIGKILL)
          _ = daemon.waitBlocking(timeout: .seconds(10))
        }
      }
    }
    let ready = try #require(
      notify.wait { $0.contains("READY=1") }, "no READY=1; log:\n\(daemon.errors)")
    #expect(ready.fuseMountpoints.contains("\(sandbox.path)/fall back"))
    #expect(daemon.errors.contains("mountinfo POLLPRI (forced by MOUNTSUP_MOUNT_TABLE=mountinfo)"))
    kill(daemon.pid, SIGTERM)
    #expect(daemon.waitBlocking(timeout: .seconds(20)))
    #expect(daemon.status == 0)
  }

  /// Not a check but a measurement: what `readChanges()` costs for one new mount with 10 and
  /// with 1,000 mounts present, per mechanism; and a lookup. Printed, never asserted.
  @Test func costOfOneAttachWith10And1000MountsPresent() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    var made: [String] = []
    defer { for path in made.reversed() { umount2(path, Int32(MNT_DETACH)) } }
    var report: [String] = []
    for present in [10, 1000] {
      while made.count < present {
        let path = "\(sandbox.path)/m\(made.count)"
        mkdir(path, 0o755)
        try mountTmpfs(source: "bench", at: path)
        made.append(path)
      }
      for mechanism in Self.mechanisms {
        let table = try MountTable(mechanism: mechanism)
        let probe = "\(sandbox.path)/probe"
        mkdir(probe, 0o755)
        var attach: [Double] = []
        var lookup: [Double] = []
        for _ in 0..<30 {
          try mountTmpfs(source: "probe", at: probe)
          defer {
            umount2(probe, Int32(MNT_DETACH))
            _ = waitForChanges(table) { $0.detached.contains { $0.source == "probe" } }
          }
          waitReadable(table)
          var changes: [MountChange] = []
          let start = ContinuousClock.now
          changes = table.readChanges()
          attach.append(microseconds(ContinuousClock.now - start))
          // Another test's mount may arrive in the same read.
          #expect(changes.attached.contains { $0.source == "probe" })
          let looked = ContinuousClock.now
          _ = table.mounts(at: probe)
          lookup.append(microseconds(ContinuousClock.now - looked))
        }
        let count = table.count
        report.append(
          "\(mechanism == .fanotify ? "fanotify " : "mountinfo") with \(count) mounts: "
            + "readChanges() for one attach: median \(median(attach)) µs, "
            + "min \(attach.min()!) µs; mounts(at:): median \(median(lookup)) µs")
      }
    }
    print(report.map { "MountTable cost: " + $0 }.joined(separator: "\n"))
  }
}

// MARK: Helpers

extension MountChange {
  var entry: MountEntry {
    switch self {
    case .attached(let entry), .detached(let entry): entry
    }
  }
}

extension [MountChange] {
  var attached: [MountEntry] {
    compactMap { if case .attached(let entry) = $0 { entry } else { nil } }
  }
  var detached: [MountEntry] {
    compactMap { if case .detached(let entry) = $0 { entry } else { nil } }
  }
}

private func mountTmpfs(source: String, at path: String) throws {
  guard mount(source, path, "tmpfs", 0, "size=64k") == 0 else {
    throw TestFailure("mount tmpfs at \(path): \(String(cString: strerror(errno)))")
  }
}

/// fsopen, fsconfig, fsmount and move_mount(MOVE_MOUNT_BENEATH): no wrapper in this glibc and no
/// option of this `mount(8)` does it.
private func mountTmpfsBeneath(source: String, at path: String) throws {
  typealias Syscall = @convention(c) (Int, Int, Int, Int, Int, Int, Int) -> Int
  // glibc's syscall(2) is variadic, which Swift does not import; with integer arguments only,
  // a fixed-arity call is the same on x86_64 and arm64.
  guard let symbol = dlsym(nil, "syscall") else { throw TestFailure("no syscall symbol") }
  let call = unsafeBitCast(symbol, to: Syscall.self)
  func check(_ result: Int, _ step: String) throws -> Int {
    guard result >= 0 else { throw TestFailure("\(step): \(String(cString: strerror(errno)))") }
    return result
  }
  let context = try "tmpfs".withCString {
    try check(call(430, Int(bitPattern: $0), 1, 0, 0, 0, 0), "fsopen")
  }
  defer { close(Int32(context)) }
  _ = try "source".withCString { key in
    try source.withCString { value in
      try check(
        call(431, context, 1, Int(bitPattern: key), Int(bitPattern: value), 0, 0), "fsconfig source"
      )
    }
  }
  _ = try check(call(431, context, 6, 0, 0, 0, 0), "fsconfig create")
  let mount = try check(call(432, context, 1, 0, 0, 0, 0), "fsmount")
  defer { close(Int32(mount)) }
  _ = try "".withCString { empty in
    try path.withCString { target in
      // MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_BENEATH, to AT_FDCWD.
      try check(
        call(429, mount, Int(bitPattern: empty), -100, Int(bitPattern: target), 0x4 | 0x200, 0),
        "move_mount beneath")
    }
  }
}

/// Collects `readChanges()` until they satisfy `done`, waiting on the table's fd in between
/// (never sleeping); records an issue if 10 s pass first.
private func waitForChanges(
  _ table: MountTable, _ done: ([MountChange]) -> Bool
) -> [MountChange] {
  let end = ContinuousClock.now + .seconds(10)
  var changes: [MountChange] = []
  while true {
    changes += table.readChanges()
    if done(changes) { return changes }
    let left = ContinuousClock.now.duration(to: end) / .milliseconds(1)
    guard left > 0 else {
      Issue.record("no such change within 10 s; got \(changes)")
      return changes
    }
    var poller = pollfd(fd: table.fd, events: Int16(table.epollEvents), revents: 0)
    _ = poll(&poller, 1, Int32(left))
  }
}

/// Waits until the table's fd says a change is pending.
private func waitReadable(_ table: MountTable) {
  var poller = pollfd(fd: table.fd, events: Int16(table.epollEvents), revents: 0)
  _ = poll(&poller, 1, 10_000)
}

/// What both mechanisms must agree on: everything but the IDs.
private func describe(_ mounts: [MountEntry]) -> [MountEntry] {
  mounts.map {
    var entry = $0
    entry.id = 0
    entry.parentID = 0
    return entry
  }
}

private func device(of path: String) throws -> (UInt32, UInt32) {
  var info = stat()
  guard stat(path, &info) == 0 else {
    throw TestFailure("stat \(path): \(String(cString: strerror(errno)))")
  }
  let device = UInt64(info.st_dev)
  let major = ((device >> 32) & 0xffff_f000) | ((device >> 8) & 0xfff)
  let minor = ((device >> 12) & 0xffff_ff00) | (device & 0xff)
  return (UInt32(major), UInt32(minor))
}

private func microseconds(_ duration: Duration) -> Double {
  (duration / .nanoseconds(1)) / 1000
}

private func median(_ values: [Double]) -> Double {
  let sorted = values.sorted()
  return (sorted[sorted.count / 2] * 10).rounded() / 10
}
