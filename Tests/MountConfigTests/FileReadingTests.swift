import Foundation
import MountConfig
import Testing

/// Configuration files that are not plain, small files: the loader runs on the supervisor's event
/// loop at a reload, so none of them may block it or make it read without bound.
@Suite struct FileReading {
  /// Runs `load` on a thread of its own (not a task: a blocked task would hold one of the few
  /// threads of the cooperative pool) and waits at most 10 s for it, so that a loader that
  /// blocks fails the test instead of hanging the run; `unblock` is called if it is still busy.
  private func loadPromptly(
    unblock: @escaping @Sendable () -> Void,
    _ load: @escaping @Sendable () throws(InvalidConfiguration) -> Configuration
  ) async throws -> Result<Configuration, InvalidConfiguration> {
    let box = ResultBox()
    let thread = Thread {
      do throws(InvalidConfiguration) { box.set(.success(try load())) } catch {
        box.set(.failure(error))
      }
    }
    thread.start()
    let deadline = ContinuousClock.now + .seconds(10)
    while box.value == nil {
      if ContinuousClock.now >= deadline {
        Issue.record("the loader was still busy after 10 s")
        unblock()
        while box.value == nil { try await Task.sleep(for: .milliseconds(10)) }
        break
      }
      try await Task.sleep(for: .milliseconds(10))
    }
    return box.value!
  }

  /// Opens the FIFO for writing and closes it at once: a reader blocked on it gets EOF.
  private static func release(_ fifo: String) {
    let fd = open(fifo, O_WRONLY | O_NONBLOCK)
    if fd >= 0 { close(fd) }
  }

  @Test func aFIFOMatchedByAnIncludeIsRefusedWithoutBlocking() async throws {
    try await withTemporaryDirectory { directory in
      try write(
        "[supervisor]\ninclude = [\"mounts.d/*.toml\"]\n", to: "mounts.toml", in: directory)
      try write(
        "[mounts.a]\nmountpoint = \"/mnt/a\"\ncommand = [\"w\"]\n", to: "mounts.d/a.toml",
        in: directory)
      let fifo = directory + "/mounts.d/b.toml"
      #expect(mkfifo(fifo, 0o644) == 0)
      defer { Self.release(fifo) }
      let result = try await loadPromptly(unblock: { Self.release(fifo) }) {
        () throws(InvalidConfiguration) in try ConfigLoader.load(path: directory + "/mounts.toml")
      }
      guard case .failure(let invalid) = result, let error = invalid.errors.first else {
        Issue.record("a FIFO was read as configuration")
        return
      }
      #expect(error.code == .notRegularFile && error.file == fifo, "\(error)")
      #expect(error.description.contains("is a FIFO (named pipe), not a regular file"))
    }
  }

  @Test func aFIFOAsMainFileIsRefusedWithoutBlocking() async throws {
    try await withTemporaryDirectory { directory in
      let fifo = directory + "/mounts.toml"
      #expect(mkfifo(fifo, 0o644) == 0)
      defer { Self.release(fifo) }
      let result = try await loadPromptly(unblock: { Self.release(fifo) }) {
        () throws(InvalidConfiguration) in try ConfigLoader.load(path: fifo)
      }
      guard case .failure(let invalid) = result, let error = invalid.errors.first else {
        Issue.record("a FIFO was read as configuration")
        return
      }
      #expect(error.code == .notRegularFile && error.file == fifo, "\(error)")
    }
  }

  @Test func aDeviceBehindASymlinkIsRefused() throws {
    try withTemporaryDirectory { directory in
      try write(
        "[supervisor]\ninclude = [\"mounts.d/*.toml\"]\n", to: "mounts.toml", in: directory)
      try FileManager.default.createDirectory(
        atPath: directory + "/mounts.d", withIntermediateDirectories: true)
      // /dev/zero would grow the daemon without bound; /dev/null shows the same check at once.
      for device in ["/dev/null", "/dev/zero"] {
        let link = directory + "/mounts.d/device.toml"
        unlink(link)
        #expect(symlink(device, link) == 0)
        expectConfigError(
          in: link, code: .notRegularFile, mount: nil, key: nil,
          mentions: ["is a character device, not a regular file"]
        ) { () throws(InvalidConfiguration) in
          try ConfigLoader.load(path: directory + "/mounts.toml")
        }
      }
    }
  }

  @Test func aFileOverOneMiBIsRefused() throws {
    try withTemporaryDirectory { directory in
      try write(
        "[supervisor]\ninclude = [\"mounts.d/*.toml\"]\n", to: "mounts.toml", in: directory)
      let comment = "# " + String(repeating: "x", count: 1021) + "\n"  // 1 KiB a line
      try write(
        String(repeating: comment, count: 1024) + "\n", to: "mounts.d/big.toml", in: directory)
      expectConfigError(
        in: directory + "/mounts.d/big.toml", code: .fileTooLarge, mount: nil, key: nil,
        mentions: ["1048577 bytes", "at most 1048576 bytes, 1 MiB"]
      ) { () throws(InvalidConfiguration) in try ConfigLoader.load(path: directory + "/mounts.toml")
      }

      // Exactly 1 MiB is fine.
      try write(String(repeating: comment, count: 1024), to: "mounts.d/big.toml", in: directory)
      #expect(throws: Never.self) { try ConfigLoader.load(path: directory + "/mounts.toml") }
    }
  }
}

/// The result of a load, set on one thread and polled on another.
final class ResultBox: @unchecked Sendable {
  private let lock = NSLock()
  private var result: Result<Configuration, InvalidConfiguration>?
  var value: Result<Configuration, InvalidConfiguration>? { lock.withLock { result } }
  func set(_ value: Result<Configuration, InvalidConfiguration>) {
    lock.withLock { result = value }
  }
}
