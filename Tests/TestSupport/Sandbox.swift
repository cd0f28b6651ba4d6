import Foundation
import Glibc

/// A directory of the test's own under /tmp, open to every user so that workers and clients
/// running as other users reach their sources, mountpoints and sockets. `cleanUp()` leaves
/// nothing behind on any path: it kills every process that names the directory on its command
/// line (the unique path makes them this test's), detaches every mount below it and only then
/// removes it, never through a mount.
public final class Sandbox {
  /// The directory, unique to this sandbox.
  public let path: String

  /// Creates the directory (mode 0755).
  public init() throws {
    var template = Array("/tmp/mountsup-test-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else {
      throw TestFailure("mkdtemp: \(String(cString: strerror(errno)))")
    }
    path = String(cString: made)
    chmod(path, 0o755)
  }

  /// Writes `text` to `name` (creating its directories) readable by all; returns its path.
  @discardableResult
  public func write(_ name: String, _ text: String) throws -> String {
    let file = path + "/" + name
    try FileManager.default.createDirectory(
      atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    try text.write(toFile: file, atomically: true, encoding: .utf8)
    chmod(file, 0o644)
    return file
  }

  /// Writes `mounts.toml` with these mount tables, more `[supervisor]` lines, and a control
  /// socket in the sandbox (or at `controlSocket`), so that daemons of parallel tests never meet.
  @discardableResult
  public func writeConfig(
    _ mounts: String, controlSocket: String? = nil, supervisor: [String] = []
  ) throws -> String {
    let socket = controlSocket ?? path + "/control.sock"
    let header = (["[supervisor]", "control_socket = \(toml(socket))"] + supervisor).map {
      $0 + "\n"
    }
    return try write("mounts.toml", header.joined() + "\n" + mounts)
  }

  /// Kills, detaches and removes (see the type); records an issue and keeps the directory if a
  /// mount stays. Call it in a `defer` right after the sandbox is made.
  public func cleanUp() {
    for pid in processes(mentioning: path) { kill(pid, SIGKILL) }
    // Retried for a while: a process killed in the middle of mounting may still add one.
    let deadline = ContinuousClock.now + .seconds(5)
    var left = mountsInside()
    while !left.isEmpty, ContinuousClock.now < deadline {
      for entry in left.reversed() { umount2(entry.mountpoint, Int32(MNT_DETACH)) }
      usleep(20_000)
      left = mountsInside()
    }
    guard left.isEmpty else {
      recordIssue("mounts left under \(path): \(left.map(\.mountpoint))")
      return
    }
    try? FileManager.default.removeItem(atPath: path)
  }

  private func mountsInside() -> [MountInfoEntry] {
    mountTable().filter { $0.mountpoint == path || $0.mountpoint.hasPrefix(path + "/") }
  }
}

/// A TOML basic string, quoted and escaped, for paths and words in test configs.
public func toml(_ text: String) -> String {
  "\""
    + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
    + "\""
}

/// A `[mounts.NAME]` table; `settings` values are TOML literals.
public func mountSection(
  _ name: String, at mountpoint: String, command: [String], _ settings: [String: String] = [:]
) -> String {
  var lines = [
    "[mounts.\(name)]", "mountpoint = \(toml(mountpoint))",
    "command = [\(command.map(toml).joined(separator: ", "))]",
  ]
  for (key, value) in settings.sorted(by: { $0.key < $1.key }) { lines.append("\(key) = \(value)") }
  return lines.joined(separator: "\n") + "\n"
}

/// A `[mounts.NAME]` table for `mountsup-testworker` with these options.
public func mountSection(
  _ name: String, at mountpoint: String, workerOptions: [String] = [],
  _ settings: [String: String] = [:]
) -> String {
  mountSection(
    name, at: mountpoint, command: [testWorker] + workerOptions + ["{mountpoint}"], settings)
}
