import CLinuxSupport
import Foundation
import Glibc
import MountSupTestSupport
import Synchronization
import Testing

/// Issue 12: a crash of a kit worker that applications never see. The mirror hands its FUSE
/// connection to mountsupd; when it is killed, a successor resumes the same kernel mount.
@Suite struct ResumeTests {
  let mirror = binDirectory + "/mountsup-mirror"

  /// The kernel's unique ID (never reused, unlike mountinfo's) of the FUSE mount at `path`.
  func uniqueMountID(at path: String) -> UInt64? {
    var ids = [UInt64](repeating: 0, count: 4096)
    let count = mountsup_listmount(0, &ids, ids.count)
    guard count > 0 else { return nil }
    var buffer = [UInt8](repeating: 0, count: 8192)
    var found: UInt64?
    for id in ids.prefix(count) {
      var info = mountsup_mount_info()
      guard mountsup_statmount(id, &buffer, buffer.count, &info) == 0,
        String(cString: info.mountpoint) == path, String(cString: info.fs_type) == "fuse"
      else { continue }
      found = id
    }
    return found
  }

  /// What `mountctl ARGUMENTS` printed on stdout (it has exited by then).
  func mountctl(_ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: binDirectory + "/mountctl")
    process.arguments = arguments
    let output = Pipe()
    process.standardOutput = output
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(decoding: data, as: UTF8.self)
  }

  /// The gaps in milliseconds that the daemon logged for each resume, in order.
  func resumeGaps(in log: String) -> [Int] {
    log.split(separator: "\n").compactMap { line in
      guard let range = line.range(of: " ms after the crash") else { return nil }
      let head = line[..<range.lowerBound]
      return Int(head.split(separator: " ").last ?? "")
    }
  }

  func percentile(_ values: [Int], _ fraction: Double) -> Int {
    let sorted = values.sorted()
    return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * fraction).rounded()))]
  }

  /// Runs `body` on a thread of its own until `stop` is set; errors go to `errors`.
  final class Load: Sendable {
    let stop = Atomic<Bool>(false)
    let errors = Mutex<[String]>([])
    let operations = Atomic<Int>(0)
    /// The longest pass of the probing thread since the last `takeLongest()`, in nanoseconds.
    private let longest = Atomic<Int>(0)
    private let started = Atomic<Int>(0)
    private let finished = Atomic<Int>(0)

    /// The longest pass of the thread started with `probes` since the last call, in ms.
    func takeLongest() -> Int { longest.exchange(0, ordering: .relaxed) / 1_000_000 }

    /// Runs `body` again and again on a thread of its own; with `probes`, the duration of each
    /// pass is kept for `takeLongest()`.
    func run(_ name: String, probes: Bool = false, _ body: @escaping @Sendable () throws -> Void) {
      let thread = Thread { [self] in
        while !stop.load(ordering: .relaxed) {
          do {
            let started = ContinuousClock.now
            try body()
            operations.add(1, ordering: .relaxed)
            if probes {
              let took = ContinuousClock.now - started
              let nanoseconds =
                Int(took.components.seconds) * 1_000_000_000
                + Int(took.components.attoseconds / 1_000_000_000)
              longest.max(nanoseconds, ordering: .relaxed)
            }
          } catch {
            errors.withLock { $0.append("\(name): \(error)") }
          }
        }
        finished.add(1, ordering: .relaxed)
      }
      started.add(1, ordering: .relaxed)
      thread.start()
    }

    /// Stops the threads and waits (bounded) for them to finish.
    func finish() -> Bool {
      stop.store(true, ordering: .relaxed)
      let count = started.load(ordering: .relaxed)
      return eventually(within: .seconds(30)) { finished.load(ordering: .relaxed) == count }
    }
  }

  static func failure(_ what: String) -> TestFailure {
    TestFailure("\(what): \(String(cString: strerror(errno))) (errno \(errno))")
  }

  /// 64 KiB of a pattern of `seed`, with its checksum in the last 8 bytes.
  static func record(_ seed: Int) -> [UInt8] {
    var bytes = (0..<(64 << 10) - 8).map { UInt8(truncatingIfNeeded: ($0 &* 131) ^ seed) }
    let sum = bytes.reduce(UInt64(seed)) { $0 &* 31 &+ UInt64($1) }
    withUnsafeBytes(of: sum) { bytes.append(contentsOf: $0) }
    return bytes
  }

  @Test(.timeLimit(.minutes(5)))
  func killedMirrorWorkersAreResumedUnderLoadWithoutAnError() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let (source, mountpoint) = ("\(sandbox.path)/source", "\(sandbox.path)/mirror")
    try FileManager.default.createDirectory(
      atPath: "\(source)/tree/a/b", withIntermediateDirectories: true)
    for index in 0..<20 {
      try "file \(index)\n".write(
        toFile: "\(source)/tree/a/f\(index)", atomically: false, encoding: .utf8)
    }
    let held = Self.record(7)
    try Data(held).write(to: URL(fileURLWithPath: "\(source)/held.bin"))
    let (notify, daemon) = try sandbox.startDaemon(
      mountSection(
        "data", at: mountpoint, command: [mirror, source, "{mountpoint}"],
        ["restart_delay": "\"0s\"", "start_limit_burst": "1000"]))
    defer { daemon.stop() }
    guard notify.wait(for: { $0.contains("READY=1") }) != nil,
      eventually({ daemon.log.contains("holding the worker's FUSE connection") })
    else {
      throw TestFailure("the mirror never became ready with its connection held:\n\(daemon.log)")
    }
    let mountID = try #require(uniqueMountID(at: mountpoint))

    // One process keeps a file open across every crash and reads it.
    let heldDescriptor = open("\(mountpoint)/held.bin", O_RDONLY | O_CLOEXEC)
    try #require(heldDescriptor >= 0)
    defer { close(heldDescriptor) }

    let load = Load()
    let synced = Mutex<[Int: [UInt8]]>([:])
    let nextRecord = Atomic<Int>(0)
    load.run("writer") {
      let seed = nextRecord.add(1, ordering: .relaxed).newValue
      let bytes = Self.record(seed)
      let path = "\(mountpoint)/w\(seed % 50)"
      // What the slot held is gone with the truncation, whatever happens next.
      synced.withLock { $0[seed % 50] = nil }
      let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
      guard fd >= 0 else { throw Self.failure("open \(path)") }
      defer { close(fd) }
      guard Glibc.write(fd, bytes, bytes.count) == bytes.count else {
        throw Self.failure("write \(path)")
      }
      guard fsync(fd) == 0 else { throw Self.failure("fsync \(path)") }
      synced.withLock { $0[seed % 50] = bytes }
    }
    load.run("reader") {
      guard let (slot, expected) = synced.withLock({ $0.randomElement() }) else { return }
      let path = "\(mountpoint)/w\(slot)"
      let fd = open(path, O_RDONLY | O_CLOEXEC)
      guard fd >= 0 else { throw Self.failure("open \(path)") }
      defer { close(fd) }
      var buffer = [UInt8](repeating: 0, count: expected.count)
      let got = read(fd, &buffer, buffer.count)
      guard got >= 0 else { throw Self.failure("read \(path)") }
      // The writer may be rewriting it: a short or other record is fine, a wrong sum is not.
      if got == expected.count, buffer.suffix(8) == expected.suffix(8), buffer != expected {
        throw TestFailure("\(path): data differs from its checksum")
      }
    }
    load.run("walker", probes: true) {
      for directory in ["\(mountpoint)/tree", "\(mountpoint)/tree/a", "\(mountpoint)/tree/a/b"] {
        guard let stream = opendir(directory) else { throw Self.failure("opendir \(directory)") }
        var names = 0
        errno = 0
        while let entry = readdir(stream) {
          names += 1
          var info = stat()
          let name = withUnsafeBytes(of: entry.pointee.d_name) {
            String(cString: $0.bindMemory(to: CChar.self).baseAddress!)
          }
          if name != ".", name != "..", lstat(directory + "/" + name, &info) != 0 {
            closedir(stream)
            throw Self.failure("stat \(directory)/\(name)")
          }
        }
        if errno != 0 {
          let failure = Self.failure("readdir \(directory)")
          closedir(stream)
          throw failure
        }
        closedir(stream)
        guard names >= 2 else { throw TestFailure("\(directory): empty listing") }
      }
    }
    load.run("holder") {
      var buffer = [UInt8](repeating: 0, count: held.count)
      let got = pread(heldDescriptor, &buffer, buffer.count, 0)
      guard got == held.count else { throw Self.failure("pread held.bin (got \(got))") }
      guard buffer == held else { throw TestFailure("held.bin: wrong data") }
    }

    let crashes = 100
    var lastWorker: Int32 = 0
    // The longest stat/readdir pass (which always reaches the worker) around each crash: what
    // an application waited.
    var stalls: [Int] = []
    for crash in 1...crashes {
      guard
        eventually({
          let workers = daemon.workerPIDs(matching: mountpoint)
          return workers.count == 1 && workers[0] != lastWorker
        })
      else {
        _ = load.finish()
        throw TestFailure("no worker to kill before crash \(crash):\n\(daemon.log)")
      }
      // The pass that spanned the last crash has ended by the time its successor is ready.
      if crash > 1 { stalls.append(load.takeLongest()) } else { _ = load.takeLongest() }
      lastWorker = daemon.workerPIDs(matching: mountpoint)[0]
      kill(lastWorker, SIGKILL)
      guard eventually({ resumeGaps(in: daemon.log).count >= crash }) else {
        _ = load.finish()
        throw TestFailure("crash \(crash) was not resumed:\n\(daemon.log)")
      }
    }
    // Passes that begin after the last resume: the one that spanned it has ended.
    let passes = load.operations.load(ordering: .relaxed)
    _ = eventually { load.operations.load(ordering: .relaxed) > passes + 20 }
    stalls.append(load.takeLongest())
    let operations = load.operations.load(ordering: .relaxed)
    #expect(load.finish(), "the load did not finish (an access hangs)")

    let errors = load.errors.withLock { $0 }
    let workerLines = daemon.log.split(separator: "\n").filter { $0.contains("source=worker") }
    #expect(
      errors.isEmpty,
      "\(errors.count) errors seen by the load, first: \(errors.prefix(5)); worker output: \(workerLines.suffix(10))"
    )
    #expect(uniqueMountID(at: mountpoint) == mountID, "the mount was replaced")
    #expect(mountTable().filter { $0.mountpoint == mountpoint }.count == 1)
    // Every fsync'ed record is in SOURCE, byte for byte.
    for (slot, bytes) in synced.withLock({ $0 }) {
      #expect(FileManager.default.contents(atPath: "\(source)/w\(slot)").map(Array.init) == bytes)
    }
    notify.drain()
    #expect(notify.count("READY=1") == 1)

    let socket = sandbox.path + "/control.sock"
    let table = try mountctl(["status", "--socket", socket])
    #expect(table.contains("resumed \(crashes)×, last gap "), "\(table)")
    let document = try JSONSerialization.jsonObject(
      with: Data(try mountctl(["status", "--json", "--socket", socket]).utf8))
    let mount = try #require(((document as? [String: Any])?["mounts"] as? [[String: Any]])?.first)
    #expect(mount["resumes"] as? Int == crashes)
    #expect(mount["last_resume_gap_ms"] is Double)
    #expect(mount["holds_connection"] as? Bool == true)

    let gaps = resumeGaps(in: daemon.log)
    print(
      "resume: \(crashes) SIGKILLs under load, \(operations) operations, \(errors.count) errors; "
        + "gap from crash to the successor's READY p50 \(percentile(gaps, 0.5)) ms, "
        + "p99 \(percentile(gaps, 0.99)) ms, max \(gaps.max() ?? 0) ms; longest stat/readdir "
        + "pass per crash p50 \(percentile(stalls, 0.5)) ms, p99 \(percentile(stalls, 0.99)) ms")
  }

  @Test(.timeLimit(.minutes(2)))
  func aSuccessorThatCannotResumeAbortsAndDetachesTheMount() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let (source, mountpoint) = ("\(sandbox.path)/source", "\(sandbox.path)/mirror")
    try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
    // The first start is the mirror; every later one waits a little and exits 1, as a worker
    // whose binary was replaced by a broken one.
    let marker = "\(sandbox.path)/started"
    let script = try sandbox.write(
      "worker.sh",
      """
      #!/bin/sh
      if [ -e \(marker) ]; then sleep 0.3; echo "broken worker" >&2; exit 1; fi
      touch \(marker)
      exec \(mirror) "$@"
      """)
    chmod(script, 0o755)
    let (notify, daemon) = try sandbox.startDaemon(
      mountSection(
        "data", at: mountpoint, command: [script, source, "{mountpoint}"],
        [
          "restart_delay": "\"0s\"", "start_timeout": "\"2s\"", "start_limit_burst": "3",
        ]))
    defer { daemon.stop() }
    guard notify.wait(for: { $0.contains("READY=1") }) != nil,
      eventually({ daemon.log.contains("holding the worker's FUSE connection") })
    else {
      throw TestFailure("the mirror never became ready with its connection held:\n\(daemon.log)")
    }
    let worker = try #require(daemon.workerPIDs(matching: mountpoint).first)
    kill(worker, SIGKILL)
    // An access during the gap waits for the successor; when it cannot resume, it fails.
    let started = ContinuousClock.now
    var attributes = stat()
    let result = stat("\(mountpoint)/never-looked-up", &attributes)
    let code = errno
    let waited = ContinuousClock.now - started
    #expect(result != 0 && [ENOTCONN, ECONNABORTED].contains(code), "stat: \(result), \(code)")
    // start_timeout bounds the wait (the broken successor exits after 0.3 s), with a second's
    // slack for a busy machine.
    #expect(waited < .seconds(3), "the access waited \(waited)")
    #expect(eventually { fuseMount(at: mountpoint) == nil }, "the dead mount stayed")
    #expect(
      eventually { daemon.log.contains("start limit reached") },
      "the mount did not fail:\n\(daemon.log)")
  }
}
