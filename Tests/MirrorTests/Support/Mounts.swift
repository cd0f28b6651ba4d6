import Glibc
import Testing

/// One line of /proc/self/mountinfo.
struct MountEntry {
  var mountpoint: String
  var type: String
  var source: String
}

/// The mounts of this process's namespace.
func mountTable() -> [MountEntry] {
  guard let text = try? readFile("/proc/self/mountinfo") else { return [] }
  return text.split(separator: "\n").compactMap { line in
    let halves = line.components(separatedBy: " - ")
    guard halves.count == 2 else { return nil }
    let fields = halves[0].split(separator: " ")
    let tail = halves[1].split(separator: " ")
    guard fields.count >= 5, tail.count >= 2 else { return nil }
    return MountEntry(
      mountpoint: unescapeMountField(String(fields[4])), type: String(tail[0]),
      source: unescapeMountField(String(tail[1])))
  }
}

/// The FUSE mount at `path`, if there is one.
func fuseMount(at path: String) -> MountEntry? {
  mountTable().last { $0.mountpoint == path && ($0.type == "fuse" || $0.type.hasPrefix("fuse.")) }
}

private func unescapeMountField(_ field: String) -> String {
  var bytes: [UInt8] = []
  var utf8 = Array(field.utf8)[...]
  while let byte = utf8.popFirst() {
    if byte == UInt8(ascii: "\\"), utf8.count >= 3,
      let value = UInt8(String(decoding: utf8.prefix(3), as: UTF8.self), radix: 8)
    {
      bytes.append(value)
      utf8 = utf8.dropFirst(3)
    } else {
      bytes.append(byte)
    }
  }
  return String(decoding: bytes, as: UTF8.self)
}

extension StringProtocol {
  fileprivate func components(separatedBy separator: String) -> [String] {
    var parts: [String] = []
    var rest = Substring(self)
    while let range = rest.firstRange(of: separator) {
      parts.append(String(rest[..<range.lowerBound]))
      rest = rest[range.upperBound...]
    }
    parts.append(String(rest))
    return parts
  }
}

/// Detaches whatever is mounted at `path` (our own test mounts only: callers pass paths inside
/// their scratch directory).
func detachMount(_ path: String) {
  while fuseMount(at: path) != nil {
    guard umount2(path, Int32(MNT_DETACH)) == 0 else { return }
  }
}

/// A scratch directory for one test, world-searchable so that tests can act as nobody.
/// ``remove()`` deletes it, never crossing into a mount that is still attached.
final class Scratch {
  let root: String

  init() throws {
    var template = Array("/tmp/mountsup-mirror-test.XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { throw HarnessError("mkdtemp failed") }
    root = String(cString: made)
    chmod(root, 0o755)
  }

  func path(_ name: String) -> String { root + "/" + name }

  /// Creates `name` (and its parents) with mode 0755 and returns its path.
  @discardableResult
  func directory(_ name: String) throws -> String {
    let path = self.path(name)
    var partial = root
    for component in name.split(separator: "/") {
      partial += "/" + component
      if mkdir(partial, 0o755) != 0 && errno != EEXIST {
        throw HarnessError("mkdir \(partial): \(String(cString: strerror(errno)))")
      }
    }
    return path
  }

  /// `directory(name)`, owned by `nobody`: for a mirror run as that user.
  func directoryForNobody(_ name: String) throws -> String {
    let path = try directory(name)
    guard chown(path, 65534, 65534) == 0 else {
      throw HarnessError("chown \(path): \(String(cString: strerror(errno)))")
    }
    return path
  }

  func remove() {
    for entry in mountTable() where entry.mountpoint.hasPrefix(root + "/") {
      detachMount(entry.mountpoint)
    }
    _ = try? shell("rm -rf --one-file-system \"\(root)\"", in: "/")
  }
}

/// A message from a worker on its readiness socket.
enum WorkerMessage: Equatable {
  case message(String)
  case endOfFile
  case timedOut
}

/// A running mountsup-mirror, started the way mountsupd starts it (with a readiness
/// socketpair as fd 3) or standalone.
final class MirrorProcess {
  static var executable: String {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    let exe = String(
      decoding: buffer[..<max(0, length)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return exe[..<(exe.lastIndex(of: "/") ?? exe.endIndex)] + "/mountsup-mirror"
  }

  let child: Child
  let mountpoint: String
  /// The test's end of the readiness socketpair; -1 when started standalone.
  let notify: Int32

  /// `wrapper` runs before the mirror's own command line (setpriv, prlimit, ...).
  init(
    source: String, mountpoint: String, options: [String] = [], supervised: Bool = true,
    extraArguments: [String] = [], wrapper: [String] = []
  ) throws {
    var arguments = wrapper + [MirrorProcess.executable, source, mountpoint] + extraArguments
    for option in options { arguments += ["-o", option] }
    var environment = baseEnvironment(home: "/")
    var pair: [Int32] = [-1, -1]
    if supervised {
      guard
        socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair)
          == 0
      else { throw HarnessError("socketpair failed") }
      environment["MOUNTSUP_NOTIFY_FD"] = "3"
      environment["MOUNTSUP_NAME"] = "test"
      environment["MOUNTSUP_MOUNTPOINT"] = mountpoint
    }
    defer { if pair[1] >= 0 { close(pair[1]) } }
    do {
      child = try Child(arguments, environment: environment, notify: supervised ? pair[1] : nil)
    } catch {
      if pair[0] >= 0 { close(pair[0]) }
      throw error
    }
    self.mountpoint = mountpoint
    notify = pair[0]
  }

  deinit {
    stopAndClean()
    if notify >= 0 { close(notify) }
  }

  /// The next datagram from the worker.
  func nextMessage(timeout: Double = 10) -> WorkerMessage {
    var pollFD = pollfd(fd: notify, events: Int16(POLLIN), revents: 0)
    guard poll(&pollFD, 1, Int32(timeout * 1000)) > 0 else { return .timedOut }
    var buffer = [UInt8](repeating: 0, count: 4096)
    let count = recv(notify, &buffer, buffer.count, 0)
    guard count > 0 else { return .endOfFile }
    return .message(String(decoding: buffer[..<count], as: UTF8.self))
  }

  /// Waits until the mount serves: READY=1 when supervised, the mount in mountinfo otherwise.
  func waitReady(timeout: Double = 10) throws {
    if notify >= 0 {
      let message = nextMessage(timeout: timeout)
      guard message == .message("READY=1") else {
        throw HarnessError("expected READY=1, got \(message); output:\n\(child.text)")
      }
    } else {
      guard waitUntil(timeout: timeout, { fuseMount(at: mountpoint) != nil }) else {
        throw HarnessError("no mount at \(mountpoint); output:\n\(child.text)")
      }
    }
  }

  /// Sends `signal` and returns the worker's exit code.
  func stop(signal: Int32 = SIGTERM, timeout: Double = 20) throws -> Int32 {
    kill(child.pid, signal)
    return try child.exitCode(timeout: timeout)
  }

  /// Kills the worker if it still runs and detaches its mount if it is still there.
  func stopAndClean() {
    if !child.hasExited {
      kill(child.pid, SIGTERM)
      if child.wait(timeout: 10) == nil {
        kill(-child.pid, SIGKILL)
        _ = child.wait(timeout: 10)
      }
    }
    detachMount(mountpoint)
  }
}

/// Runs `body` with a fresh scratch tree holding `src` (mirrored), `mnt` (the mount) and
/// `native` (for running workloads without the mirror). Everything is cleaned up on every path.
func withMirror(
  options: [String] = [], supervised: Bool = true,
  prepare: (Scratch) throws -> Void = { _ in },
  _ body: (MirrorProcess, Scratch) throws -> Void
) throws {
  let scratch = try Scratch()
  defer { scratch.remove() }
  let source = try scratch.directory("src")
  let mountpoint = try scratch.directory("mnt")
  try scratch.directory("native")
  try prepare(scratch)
  let mirror = try MirrorProcess(
    source: source, mountpoint: mountpoint, options: options, supervised: supervised)
  defer { mirror.stopAndClean() }
  try mirror.waitReady()
  try body(mirror, scratch)
}

/// The whole file at `path`.
func readFile(_ path: String) throws -> String {
  let descriptor = open(path, O_RDONLY | O_CLOEXEC)
  guard descriptor >= 0 else {
    throw HarnessError("open \(path): \(String(cString: strerror(errno)))")
  }
  defer { close(descriptor) }
  var bytes: [UInt8] = []
  var buffer = [UInt8](repeating: 0, count: 65536)
  while true {
    let count = read(descriptor, &buffer, buffer.count)
    guard count >= 0 else {
      throw HarnessError("read \(path): \(String(cString: strerror(errno)))")
    }
    if count == 0 { break }
    bytes.append(contentsOf: buffer[..<count])
  }
  return String(decoding: bytes, as: UTF8.self)
}

/// Writes `text` to `path` (created 0644 or truncated); throws with the errno on failure.
func writeFile(_ path: String, _ text: String) throws(ErrnoError) {
  let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
  guard descriptor >= 0 else { throw ErrnoError(errno) }
  defer { close(descriptor) }
  var text = text
  let written = text.withUTF8 { write(descriptor, $0.baseAddress, $0.count) }
  guard written == text.utf8.count else { throw ErrnoError(errno) }
}

/// A syscall's errno, as a test sees it.
struct ErrnoError: Error, Equatable, CustomStringConvertible {
  var code: Int32
  init(_ code: Int32) { self.code = code }
  var description: String { "\(String(cString: strerror(code))) (errno \(code))" }
}

/// Runs a syscall-like `body` (returning -1 with errno on failure) and returns its errno, or 0.
func errnoOf(_ body: () -> Int) -> Int32 {
  errno = 0
  return body() == -1 ? errno : 0
}

/// lstat(2), throwing the errno.
func lstatOf(_ path: String) throws(ErrnoError) -> stat {
  var attributes = stat()
  guard lstat(path, &attributes) == 0 else { throw ErrnoError(errno) }
  return attributes
}
