import Glibc
import Testing

/// What has been written survives the worker: its clean stop, and its SIGKILL.
@Suite("mountsup-mirror data safety")
struct DataSafetyTests {
  /// Distinct content for file `index`, `size` bytes long.
  static func content(_ index: Int, size: Int) -> [UInt8] {
    var state = UInt64(index) &* 0x9E37_79B9_7F4A_7C15 | 1
    return (0..<size).map { _ in
      state ^= state << 13
      state ^= state >> 7
      state ^= state << 17
      return UInt8(truncatingIfNeeded: state)
    }
  }

  static func write(_ bytes: [UInt8], to path: String, sync: Bool) throws(ErrnoError) {
    let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard descriptor >= 0 else { throw ErrnoError(errno) }
    defer { close(descriptor) }
    var offset = 0
    while offset < bytes.count {
      let count = bytes[offset...].withUnsafeBytes {
        Glibc.write(descriptor, $0.baseAddress, $0.count)
      }
      guard count > 0 else { throw ErrnoError(errno) }
      offset += count
    }
    if sync, fsync(descriptor) != 0 { throw ErrnoError(errno) }
  }

  static func readBytes(_ path: String) throws(ErrnoError) -> [UInt8] {
    let descriptor = open(path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { throw ErrnoError(errno) }
    defer { close(descriptor) }
    var result: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 1 << 16)
    while true {
      let count = read(descriptor, &buffer, buffer.count)
      guard count >= 0 else { throw ErrnoError(errno) }
      if count == 0 { return result }
      result += buffer[..<count]
    }
  }

  static let sizes = [0, 1, 4096, 100_000, 1 << 20, 3 << 20]

  @Test(
    "everything written before a clean stop is in SOURCE once the worker has exited",
    arguments: PassthroughTests.modes)
  func cleanStop(mode: String) throws {
    try withMirror(options: [mode]) { (mirror, scratch) throws in
      for (index, size) in DataSafetyTests.sizes.enumerated() {
        try DataSafetyTests.write(
          DataSafetyTests.content(index, size: size), to: mirror.mountpoint + "/file\(index)",
          sync: false)
      }
      // A file still open, written but neither closed nor synced, when the stop comes.
      let open = Glibc.open(
        mirror.mountpoint + "/still-open", O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
      #expect(open >= 0)
      defer { close(open) }
      let pending = DataSafetyTests.content(99, size: 777_777)
      #expect(
        pending.withUnsafeBytes { Glibc.write(open, $0.baseAddress, $0.count) } == pending.count)

      #expect(try mirror.stop(signal: SIGTERM) == 0)
      #expect(fuseMount(at: mirror.mountpoint) == nil)
      for (index, size) in DataSafetyTests.sizes.enumerated() {
        let stored = try DataSafetyTests.readBytes(scratch.path("src/file\(index)"))
        #expect(stored == DataSafetyTests.content(index, size: size), "file\(index)")
      }
      #expect(try DataSafetyTests.readBytes(scratch.path("src/still-open")) == pending)
    }
  }

  @Test("after SIGKILL, fsync'ed (and written) data is in SOURCE, and a new worker serves it")
  func killAndRestart() throws {
    let scratch = try Scratch()
    defer { scratch.remove() }
    let source = try scratch.directory("src")
    let mountpoint = try scratch.directory("mnt")
    let first = try MirrorProcess(source: source, mountpoint: mountpoint)
    defer { first.stopAndClean() }
    try first.waitReady()

    let synced = DataSafetyTests.content(1, size: 2 << 20)
    try DataSafetyTests.write(synced, to: mountpoint + "/synced", sync: true)
    let written = DataSafetyTests.content(2, size: 300_000)
    try DataSafetyTests.write(written, to: mountpoint + "/written", sync: false)
    // The durable-replace pattern: write a temporary, fsync it, rename it, fsync the directory.
    try DataSafetyTests.write(Array("version 2".utf8), to: mountpoint + "/config.tmp", sync: true)
    #expect(rename(mountpoint + "/config.tmp", mountpoint + "/config") == 0)
    let directory = open(mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    #expect(fsync(directory) == 0)
    close(directory)

    #expect(try first.stop(signal: SIGKILL) == 128 + SIGKILL)
    var attributes = stat()
    #expect(errnoOf { Int(stat(mountpoint + "/synced", &attributes)) } == ENOTCONN)
    #expect(try DataSafetyTests.readBytes(source + "/synced") == synced)
    #expect(try DataSafetyTests.readBytes(source + "/written") == written)
    #expect(try readFile(source + "/config") == "version 2")

    // What a supervisor does before restarting: detach the dead mount.
    detachMount(mountpoint)
    let second = try MirrorProcess(source: source, mountpoint: mountpoint)
    defer { second.stopAndClean() }
    try second.waitReady()
    #expect(try DataSafetyTests.readBytes(mountpoint + "/synced") == synced)
    #expect(try readFile(mountpoint + "/config") == "version 2")
    try writeFile(mountpoint + "/after-restart", "serving")
    #expect(try readFile(source + "/after-restart") == "serving")
    #expect(try second.stop() == 0)
  }

  @Test("unprivileged, with few descriptors: EMFILE is reported once, and forgets recover it")
  func unprivilegedDescriptorLimit() throws {
    let scratch = try Scratch()
    defer { scratch.remove() }
    let source = try scratch.directoryForNobody("src")
    let mountpoint = try scratch.directoryForNobody("mnt")
    // Mounted through fusermount3, as a worker with `user =` in its spec would be.
    let mirror = try MirrorProcess(
      source: source, mountpoint: mountpoint,
      wrapper: [
        "/usr/bin/prlimit", "--nofile=128:128", "--", "/usr/bin/setpriv", "--reuid=65534",
        "--regid=65534", "--clear-groups", "--",
      ])
    defer { mirror.stopAndClean() }
    try mirror.waitReady()

    let many = "for i in $(seq 1 200); do : > f$i || exit 1; done"
    let exhausted = try shell(many, in: mountpoint, asNobody: true)
    #expect(exhausted.status != 0)
    #expect(exhausted.output.contains("Too many open files"))
    guard case .message(let status) = mirror.nextMessage() else {
      Issue.record("no STATUS message")
      return
    }
    #expect(status.hasPrefix("STATUS=out of file descriptors (limit 128)"))
    // Once the kernel forgets deleted files, their descriptors are free again.
    try mustRun("rm -f f*", in: mountpoint, asNobody: true)
    let fewer = "rm -f g*; for i in $(seq 1 60); do : > g$i || exit 1; done"
    var lastAttempt: ShellResult?
    let recovered = waitUntil(timeout: 20) {
      // Busy parallel tests can keep the deleted inodes cached; ask the kernel to let go of
      // unused dentries and inodes, which is what sends their FORGETs.
      try? "2\n".write(toFile: "/proc/sys/vm/drop_caches", atomically: false, encoding: .utf8)
      lastAttempt = try? shell(fewer, in: mountpoint, asNobody: true)
      return lastAttempt?.status == 0
    }
    #expect(recovered, "\(String(describing: lastAttempt)); worker: \(mirror.child.text)")
    #expect(try mirror.stop() == 0)
    #expect(fuseMount(at: mountpoint) == nil)
    let warnings = mirror.child.text.split(separator: "\n").filter {
      $0.contains("warning: out of")
    }
    #expect(warnings.count == 1)
    #expect(try lstatOf(source + "/g1").st_uid == 65534)
  }

  @Test("inodes are forgotten: the worker's descriptors return to their count after deletes")
  func noDescriptorLeak() throws {
    try withMirror { (mirror, _) throws in
      func descriptors() -> Int { (try? listDirectory("/proc/\(mirror.child.pid)/fd").count) ?? -1 }
      let baseline = descriptors()
      try mustRun(
        "mkdir many && cd many && seq 1 2000 | xargs touch && ls -l | wc -l > /dev/null",
        in: mirror.mountpoint)
      #expect(descriptors() >= baseline + 2000)
      try mustRun("rm -r many", in: mirror.mountpoint)
      // Forgets arrive asynchronously, batched; wait for them.
      let settled = waitUntil(timeout: 20) { descriptors() <= baseline + 2 }
      #expect(settled, "worker holds \(descriptors()) descriptors, \(baseline) before")
    }
  }
}
