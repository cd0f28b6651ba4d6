import CLinuxSupport
import Foundation
import Glibc
import Testing

/// Where `swift test` put the built executables: beside the test bundle.
let binDirectory: String = {
  let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
  return (exe as NSString).deletingLastPathComponent
}()

let testWorker = binDirectory + "/mountsup-testworker"
let daemonBinary = binDirectory + "/mountsupd"

/// Waits for `condition` until `deadline` (seconds); false if it never held.
func eventually(within deadline: Double = 10, _ condition: () -> Bool) -> Bool {
  let end = Date().addingTimeInterval(deadline)
  while Date() < end {
    if condition() { return true }
    usleep(10_000)
  }
  return condition()
}

struct MountInfoEntry: Equatable {
  var id: Int
  var mountpoint: String
  var fsType: String
}

/// The current mount table.
func mountTable() -> [MountInfoEntry] {
  guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return [] }
  return text.split(separator: "\n").compactMap { line in
    let fields = line.split(separator: " ")
    guard let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count, let id = Int(fields[0]) else { return nil }
    return MountInfoEntry(
      id: id, mountpoint: String(fields[4]).replacingOccurrences(of: "\\040", with: " "), fsType: String(fields[dash + 1]))
  }
}

func fuseMount(at path: String) -> MountInfoEntry? {
  mountTable().last { $0.mountpoint == path && $0.fsType.hasPrefix("fuse") }
}

/// A directory of the test's own; on cleanup every mount below it is detached (deepest first)
/// before it is removed, so a failing test leaves nothing behind.
final class Sandbox {
  let path: String

  init() {
    var template = Array("/tmp/mountsup-test-XXXXXX".utf8CString)
    path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
  }

  func cleanUp() {
    for entry in mountTable().reversed() where entry.mountpoint.hasPrefix(path + "/") {
      umount2(entry.mountpoint, Int32(MNT_DETACH))
    }
    try? FileManager.default.removeItem(atPath: path)
  }

  /// A config with the given mount tables and a control socket of the sandbox's own, so that
  /// daemons of tests running in parallel never meet.
  func writeConfig(_ mounts: String) -> String {
    write("mounts.toml", "[supervisor]\ncontrol_socket = \"\(path)/control.sock\"\n\n" + mounts)
  }

  func write(_ name: String, _ text: String) -> String {
    let file = path + "/" + name
    try! text.write(toFile: file, atomically: true, encoding: .utf8)
    return file
  }
}

/// A NOTIFY_SOCKET for the daemon, as a service manager has one. It records every datagram with
/// the FUSE mounts present at the instant it arrived.
final class NotifyReceiver {
  struct Message {
    var text: String
    var fuseMountpoints: Set<String>
  }

  let path: String
  private let fd: Int32
  private(set) var messages: [Message] = []

  init(in sandbox: Sandbox) {
    path = sandbox.path + "/notify.sock"
    fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
      for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
    }
    _ = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
  }

  deinit { close(fd) }

  /// Receives until a message satisfies `match` or the deadline passes.
  @discardableResult
  func wait(within seconds: Double = 15, for match: (String) -> Bool) -> Message? {
    if let found = messages.first(where: { match($0.text) }) { return found }
    let end = Date().addingTimeInterval(seconds)
    while Date() < end {
      var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
      let remaining = Int32(max(1, end.timeIntervalSinceNow * 1000))
      guard poll(&poller, 1, remaining) > 0 else { continue }
      var buffer = [UInt8](repeating: 0, count: 8192)
      let got = recv(fd, &buffer, buffer.count, 0)
      guard got > 0 else { continue }
      let fuse = Set(mountTable().filter { $0.fsType.hasPrefix("fuse") }.map(\.mountpoint))
      let message = Message(text: String(decoding: buffer.prefix(got), as: UTF8.self), fuseMountpoints: fuse)
      messages.append(message)
      if match(message.text) { return message }
    }
    return nil
  }

  /// Everything that arrived so far, without waiting.
  func drain() {
    _ = wait(within: 0.05) { _ in false }
  }

  func count(_ line: String) -> Int {
    messages.filter { $0.text.split(separator: "\n").contains { $0 == line } }.count
  }
}

/// A `mountsupd` run on a test config, its stderr captured to a file.
final class Daemon {
  let process = Process()
  let logPath: String

  init(config: String, sandbox: Sandbox, notify: NotifyReceiver?) throws {
    logPath = sandbox.path + "/daemon.log"
    FileManager.default.createFile(atPath: logPath, contents: nil)
    process.executableURL = URL(fileURLWithPath: daemonBinary)
    process.arguments = ["--config", config]
    var environment = ProcessInfo.processInfo.environment
    environment["NOTIFY_SOCKET"] = notify?.path
    process.environment = environment
    process.standardError = FileHandle(forWritingAtPath: logPath)
    process.standardOutput = FileHandle(forWritingAtPath: logPath)
    try process.run()
  }

  var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

  var pid: Int32 { process.processIdentifier }

  func signal(_ signal: Int32) { kill(pid, signal) }

  /// Waits for the exit; nil if it did not exit in time.
  func exitCode(within seconds: Double = 20) -> Int32? {
    eventually(within: seconds) { !process.isRunning } ? process.terminationStatus : nil
  }

  /// SIGTERM and wait; SIGKILL if it hangs. Always safe to call.
  func stop() {
    guard process.isRunning else { return }
    signal(SIGTERM)
    if exitCode(within: 20) == nil {
      signal(SIGKILL)
      process.waitUntilExit()
    }
  }

  /// Pids of the daemon's direct children whose command line mentions `text`.
  func workerPIDs(matching text: String) -> [Int32] {
    childPIDs(of: pid).filter { commandLine(of: $0).contains(text) }
  }
}

func childPIDs(of parent: Int32) -> [Int32] {
  let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
  return entries.compactMap(Int32.init).filter { pid in
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
      let close = stat.lastIndex(of: ")")
    else { return false }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    return fields.count > 2 && Int32(fields[1]) == parent && fields[0] != "Z"
  }
}

func commandLine(of pid: Int32) -> String {
  guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return "" }
  return String(decoding: data.map { $0 == 0 ? UInt8(ascii: " ") : $0 }, as: UTF8.self)
}

func processExists(_ pid: Int32) -> Bool {
  guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
    let close = stat.lastIndex(of: ")")
  else { return false }
  return !stat[stat.index(after: close)...].hasPrefix(" Z")
}

/// A TOML `[mounts.NAME]` table for the test worker.
func mountSection(
  _ name: String, at mountpoint: String, workerOptions: [String] = [], extra: [String: String] = [:]
) -> String {
  let command = ([testWorker] + workerOptions + ["{mountpoint}"]).map { "\"\($0)\"" }.joined(separator: ", ")
  var lines = ["[mounts.\(name)]", "mountpoint = \"\(mountpoint)\"", "command = [\(command)]"]
  for (key, value) in extra.sorted(by: { $0.key < $1.key }) { lines.append("\(key) = \(value)") }
  return lines.joined(separator: "\n") + "\n"
}

/// Starts a test worker directly (no supervisor), for mounts the supervisor did not make.
func startForeignWorker(at mountpoint: String, options: [String] = []) throws -> Process {
  try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
  let process = Process()
  process.executableURL = URL(fileURLWithPath: testWorker)
  process.arguments = options + [mountpoint]
  process.standardOutput = FileHandle.nullDevice
  process.standardError = FileHandle.nullDevice
  try process.run()
  return process
}

func readFile(_ path: String) -> String? {
  try? String(contentsOfFile: path, encoding: .utf8)
}
