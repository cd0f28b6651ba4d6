import Foundation
import Glibc
import MountSupTestSupport
import Testing

/// Issue 15: a crash resumed under FUSE passthrough. The backing ids the dead worker registered
/// live on the connection; its successor takes them over from the state mountsupd holds, so
/// files open across the crash keep passing through and new opens of them are accepted.
@Suite struct PassthroughResumeTests {
  let mirror = binDirectory + "/mountsup-mirror"

  /// `count` bytes of a pattern of `seed`.
  static func pattern(_ seed: Int, count: Int) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: ($0 &* 31) ^ (seed &* 97)) }
  }

  static func contents(_ path: String) -> [UInt8]? {
    FileManager.default.contents(atPath: path).map(Array.init)
  }

  @Test(.timeLimit(.minutes(3)))
  func passingThroughFilesWorkAcrossCrashesAndTheirDataSurvives() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let (source, mountpoint) = ("\(sandbox.path)/source", "\(sandbox.path)/mirror")
    try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
    let (notify, daemon) = try sandbox.startDaemon(
      mountSection(
        "data", at: mountpoint,
        command: [mirror, source, "{mountpoint}", "-o", "passthrough=on"],
        ["restart_delay": "\"0s\""]))
    defer { daemon.stop() }
    guard notify.wait(for: { $0.contains("READY=1") }) != nil,
      eventually({ daemon.log.contains("holding the worker's FUSE connection") })
    else {
      throw TestFailure("the mirror never became ready with its connection held:\n\(daemon.log)")
    }

    // Open across every crash, written and read only through passthrough.
    let block = 1 << 16
    var kept = Self.pattern(0, count: block)
    let keptPath = "\(mountpoint)/kept"
    let descriptor = open(keptPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
    try #require(descriptor >= 0)
    var isOpen = true
    defer { if isOpen { close(descriptor) } }
    try #require(pwrite(descriptor, kept, block, 0) == block)

    var lastWorker: Int32 = 0
    for crash in 1...3 {
      guard
        eventually({
          let workers = daemon.workerPIDs(matching: mountpoint)
          return workers.count == 1 && workers[0] != lastWorker
        })
      else { throw TestFailure("no worker to kill before crash \(crash):\n\(daemon.log)") }
      lastWorker = daemon.workerPIDs(matching: mountpoint)[0]
      kill(lastWorker, SIGKILL)
      guard eventually({ daemon.log.components(separatedBy: " ms after the crash").count > crash })
      else { throw TestFailure("crash \(crash) was not resumed:\n\(daemon.log)") }

      // What was written before the crash is in SOURCE.
      #expect(Self.contents("\(source)/kept") == kept, "crash \(crash): SOURCE lost data")
      // The open file goes on, growing.
      let more = Self.pattern(crash, count: block)
      #expect(pwrite(descriptor, more, block, off_t(crash * block)) == block)
      kept += more
      var buffer = [UInt8](repeating: 0, count: kept.count)
      #expect(pread(descriptor, &buffer, buffer.count, 0) == kept.count)
      #expect(buffer == kept, "crash \(crash): the open file reads wrong data")
      // A new open of the same file needs the backing file the dead worker registered.
      let again = open(keptPath, O_RDONLY | O_CLOEXEC)
      #expect(again >= 0, "crash \(crash): reopen: \(String(cString: strerror(errno)))")
      if again >= 0 {
        var reread = [UInt8](repeating: 0, count: kept.count)
        #expect(pread(again, &reread, reread.count, 0) == kept.count)
        #expect(reread == kept)
        close(again)
      }
      // New files, opened after the resume.
      let fresh = Self.pattern(100 + crash, count: block)
      try Data(fresh).write(to: URL(fileURLWithPath: "\(mountpoint)/after-\(crash)"))
      #expect(Self.contents("\(mountpoint)/after-\(crash)") == fresh)
    }
    #expect(fsync(descriptor) == 0)
    var attributes = stat()
    #expect(fstat(descriptor, &attributes) == 0)
    #expect(attributes.st_size == off_t(kept.count))
    close(descriptor)
    isOpen = false

    // A clean stop: everything written through passthrough is in SOURCE.
    #expect(daemon.stop() == 0)
    #expect(fuseMount(at: mountpoint) == nil)
    #expect(Self.contents("\(source)/kept") == kept)
    for crash in 1...3 {
      #expect(Self.contents("\(source)/after-\(crash)") == Self.pattern(100 + crash, count: block))
    }
    // The first worker said once that passthrough is on; no worker had a complaint.
    let said = daemon.log.split(separator: "\n").filter {
      $0.contains("mountsup-mirror: passthrough")
    }
    #expect(said.count == 1 && said[0].contains("passthrough on:"), "\(said)")
  }
}
