import Foundation
import Glibc
import Synchronization
import Testing

/// FUSE passthrough: open files whose reads, writes and mmap the kernel does on SOURCE's file
/// itself, and the ordinary path where the worker may not use it.
@Suite("mountsup-mirror with FUSE passthrough")
struct PassthroughTests {
  /// The mirror's modes that workload tests run in: passthrough forced on (the tests run as root
  /// on a kernel that offers it) and off (every read and write through the worker).
  static let modes = ["passthrough=on", "passthrough=off"]

  /// How a worker run as nobody is started (mounting through fusermount3).
  static let asNobody = [
    "/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
  ]

  @Test("reads and writes of an open file are served while the worker is stopped")
  func bypassesTheWorker() throws {
    try withMirror(options: ["passthrough=on"]) { (mirror, scratch) throws in
      let path = mirror.mountpoint + "/data"
      try writeFile(path, "0123456789")
      let descriptor = open(path, O_RDWR | O_CLOEXEC)
      try #require(descriptor >= 0)
      defer { close(descriptor) }
      let result = Mutex<String?>(nil)
      kill(mirror.child.pid, SIGSTOP)
      defer { kill(mirror.child.pid, SIGCONT) }
      let thread = Thread {
        var buffer = [UInt8](repeating: 0, count: 10)
        let got = pread(descriptor, &buffer, 10, 0)
        result.withLock { $0 = got == 10 ? String(decoding: buffer, as: UTF8.self) : "failed" }
      }
      thread.start()
      // Without passthrough the read would wait for the stopped worker.
      #expect(waitUntil(timeout: 5) { result.withLock { $0 } != nil })
      kill(mirror.child.pid, SIGCONT)
      #expect(waitUntil(timeout: 10) { result.withLock { $0 } != nil })
      #expect(result.withLock { $0 } == "0123456789")
      #expect(try readFile(scratch.path("src/data")) == "0123456789")
      let said = mirror.child.text.split(separator: "\n").filter { $0.contains("passthrough") }
      #expect(
        said == [
          "mountsup-mirror: passthrough on: reads, writes and mmap of open files go straight to their backing files"
        ])
    }
  }

  @Test(
    "stat after writes that bypass the worker shows SOURCE's size and mtime",
    arguments: PassthroughTests.modes)
  func attributesAfterWrites(mode: String) throws {
    // Attributes cached for a minute: only the kernel's own invalidation can make them right.
    try withMirror(options: [mode, "attr_timeout=60", "entry_timeout=60"]) {
      (mirror, scratch) throws in
      let path = mirror.mountpoint + "/grown"
      let source = scratch.path("src/grown")
      func expectSame(_ what: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let mounted = try lstatOf(path)
        let direct = try lstatOf(source)
        #expect(mounted.st_size == direct.st_size, "\(what): size", sourceLocation: sourceLocation)
        #expect(
          mounted.st_mtim.tv_sec == direct.st_mtim.tv_sec
            && mounted.st_mtim.tv_nsec == direct.st_mtim.tv_nsec, "\(what): mtime",
          sourceLocation: sourceLocation)
      }
      let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
      try #require(descriptor >= 0)
      defer { close(descriptor) }
      try expectSame("created")
      let block = [UInt8](repeating: 0x61, count: 100_000)
      #expect(pwrite(descriptor, block, block.count, 0) == block.count)
      try expectSame("extended")
      #expect(try lstatOf(path).st_size == 100_000)
      let extended = try lstatOf(source).st_mtim
      #expect(PassthroughTests.waitForClock(toPass: extended))
      #expect(pwrite(descriptor, block, 10, 500) == 10)
      try expectSame("overwritten inside")
      let overwritten = try lstatOf(path).st_mtim
      #expect(
        (overwritten.tv_sec, overwritten.tv_nsec) > (extended.tv_sec, extended.tv_nsec),
        "the mtime did not move")
      // Another open file appends; the first one's view follows.
      let appender = open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
      try #require(appender >= 0)
      #expect(write(appender, block, 1000) == 1000)
      close(appender)
      try expectSame("appended")
      var attributes = stat()
      #expect(fstat(descriptor, &attributes) == 0)
      #expect(attributes.st_size == 101_000)
      #expect(PassthroughTests.waitForClock(toPass: attributes.st_mtim))
      guard let mapped = mmap(nil, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, 0),
        mapped != MAP_FAILED
      else { throw HarnessError("mmap failed") }
      mapped.storeBytes(of: 0x7A, toByteOffset: 7, as: UInt8.self)
      #expect(msync(mapped, 4096, MS_SYNC) == 0)
      munmap(mapped, 4096)
      try expectSame("written through mmap")
      #expect(ftruncate(descriptor, 5000) == 0)
      try expectSame("truncated")
    }
  }

  /// Waits until the clock file times come from (the kernel's coarse clock) has passed `time`,
  /// so that the next change of a file gets a later mtime.
  static func waitForClock(toPass time: timespec) -> Bool {
    waitUntil(timeout: 5) {
      var now = timespec()
      clock_gettime(CLOCK_REALTIME_COARSE, &now)
      return (now.tv_sec, now.tv_nsec) > (time.tv_sec, time.tv_nsec)
    }
  }

  @Test("without CAP_SYS_ADMIN the mirror serves through the worker and says so once")
  func unprivilegedFallback() throws {
    let scratch = try Scratch()
    defer { scratch.remove() }
    let source = try scratch.directoryForNobody("src")
    let mountpoint = try scratch.directoryForNobody("mnt")
    let mirror = try MirrorProcess(
      source: source, mountpoint: mountpoint, wrapper: PassthroughTests.asNobody)
    defer { mirror.stopAndClean() }
    try mirror.waitReady()
    let script = """
      set -e
      for i in 1 2 3; do seq 1 20000 > f$i; cat f$i f$i > g$i; done
      sha256sum f1 g3 && head -c 12 g2 && wc -c < g1
      """
    let mounted = try mustRun(script, in: mountpoint, asNobody: true)
    let direct = try mustRun(script, in: scratch.directory("native"))
    #expect(mounted == direct)
    #expect(try mirror.stop() == 0)
    let said = mirror.child.text.split(separator: "\n").filter { $0.contains("passthrough") }
    #expect(
      said == [
        "mountsup-mirror: passthrough not used: the worker lacks CAP_SYS_ADMIN in the initial user namespace; reads and writes go through the worker"
      ])
  }

  @Test("passthrough=on without the privilege fails at start, saying why, and leaves no mount")
  func requiredButUnavailable() throws {
    let scratch = try Scratch()
    defer { scratch.remove() }
    let source = try scratch.directoryForNobody("src")
    let mountpoint = try scratch.directoryForNobody("mnt")
    let mirror = try MirrorProcess(
      source: source, mountpoint: mountpoint, options: ["passthrough=on"],
      wrapper: PassthroughTests.asNobody)
    defer { mirror.stopAndClean() }
    #expect(
      mirror.nextMessage()
        == .message(
          "ERROR=passthrough=on, but passthrough is unavailable: the worker lacks CAP_SYS_ADMIN in the initial user namespace\nERRNO=\(ENOTSUP)"
        ))
    #expect(try mirror.child.exitCode() == 1)
    #expect(waitUntil(timeout: 10) { fuseMount(at: mountpoint) == nil })
  }
}
