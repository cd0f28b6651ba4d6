import Foundation
import Glibc
import MountSupTestSupport
import Testing

/// The built-in worker under the supervisor: what was written reaches SOURCE on a clean stop, and
/// what was fsync'ed survives a killed worker whose mount the supervisor brings back.
@Suite struct SupervisedMirrorTests {
  let mirror = binDirectory + "/mountsup-mirror"

  /// Writes `data` to `path` through open/write/close, with an fsync before the close if asked.
  func write(_ data: [UInt8], to path: String, fsync synced: Bool) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw TestFailure("open \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    guard Glibc.write(fd, data, data.count) == data.count else {
      throw TestFailure("short write to \(path)")
    }
    if synced { guard fsync(fd) == 0 else { throw TestFailure("fsync \(path) failed") } }
  }

  /// mountsupd with one mount, `mountsup-mirror` of a new `source` at `mountpoint`, once ready.
  func startMirror(of source: String, at mountpoint: String, in sandbox: Sandbox) throws -> (
    notify: NotifyReceiver, daemon: Daemon
  ) {
    try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
    let (notify, daemon) = try sandbox.startDaemon(
      mountSection("data", at: mountpoint, command: [mirror, source, "{mountpoint}"]))
    guard notify.wait(for: { $0.contains("READY=1") }) != nil else {
      daemon.stop()
      throw TestFailure("the mirror never became ready; log:\n\(daemon.log)")
    }
    return (notify, daemon)
  }

  func contents(_ path: String) -> [UInt8]? {
    FileManager.default.contents(atPath: path).map(Array.init)
  }

  @Test func everythingWrittenBeforeACleanStopIsInTheSource() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let (source, mountpoint) = ("\(sandbox.path)/source", "\(sandbox.path)/mirror")
    let (_, daemon) = try startMirror(of: source, at: mountpoint, in: sandbox)
    defer { daemon.stop() }

    let big = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
    try write(big, to: "\(mountpoint)/big.bin", fsync: false)
    try FileManager.default.createDirectory(
      atPath: "\(mountpoint)/dir/sub", withIntermediateDirectories: true)
    try write(Array("note\n".utf8), to: "\(mountpoint)/dir/sub/note.txt", fsync: false)

    daemon.signal(SIGTERM)
    #expect(daemon.exitCode() == 0)
    #expect(fuseMount(at: mountpoint) == nil)
    #expect(contents("\(source)/big.bin") == big)
    #expect(contents("\(source)/dir/sub/note.txt") == Array("note\n".utf8))
  }

  @Test func fsyncedDataSurvivesAKilledWorkerAndTheMountServesAgain() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let (source, mountpoint) = ("\(sandbox.path)/source", "\(sandbox.path)/mirror")
    let (notify, daemon) = try startMirror(of: source, at: mountpoint, in: sandbox)
    defer { daemon.stop() }
    let worker = try #require(daemon.workerPIDs(matching: mountpoint).first)

    let record = Array("committed before the crash\n".utf8)
    try write(record, to: "\(mountpoint)/journal", fsync: true)
    kill(worker, SIGKILL)

    #expect(
      eventually {
        let workers = daemon.workerPIDs(matching: mountpoint)
        return workers.count == 1 && workers != [worker]
          && contents("\(mountpoint)/journal") == record
      }, "the mirror does not serve again; log:\n\(daemon.log)")
    #expect(contents("\(source)/journal") == record)
    #expect(
      mountTable().filter { $0.mountpoint == mountpoint }.count == 1,
      "a dead mount is still stacked")
    try write(Array("after\n".utf8), to: "\(mountpoint)/after", fsync: true)
    #expect(contents("\(source)/after") == Array("after\n".utf8))
    notify.drain()
    #expect(notify.count("READY=1") == 1)
  }
}
