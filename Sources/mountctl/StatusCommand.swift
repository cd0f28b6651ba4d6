import ArgumentParser
import FoundationEssentials
import Glibc
import MountControl
import MountDuration

struct Status: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Show the state of the mounts (all, or those named).",
    discussion: """
      Columns: name, state (stopped, starting, ready, backoff, stopping, exited, failed), worker \
      pid, time since the mount was confirmed ready, restarts (with "resumed N×, last gap M ms" \
      for crashes resumed on the live FUSE connection), mountpoint, and the last failure in \
      the worker's own words ("stopped by operator" for a mount stopped with mountctl stop). \
      After an invalid reload, a line below the table says why it failed. --json prints the \
      documented JSON form (docs/control-protocol.md).

      Exits 0 when every listed mount is ready, 3 when some is not, 4 when mountsupd cannot be \
      reached or does not answer, 77 when it refuses the caller, 1 on other errors (such as an \
      unknown name). With --required only the required mounts are listed and judged: the \
      readiness probe of a container (deploy/kubernetes), ready exactly while every required \
      mount is confirmed.

      Examples:
        mountctl status
        mountctl status photos media
        mountctl status --json | jq -r '.mounts[] | select(.state != "ready") | .name'
        mountctl status --required
      """)

  @OptionGroup var connection: Connection

  @Argument(help: "Mounts to show; all when none are named.", completion: mountNameCompletion)
  var names: [String] = []

  @Flag(name: .long, help: "Print JSON instead of a table.")
  var json = false

  @Flag(name: .long, help: "Only the required mounts (required = true): exit 0 when all are ready.")
  var required = false

  func run() throws {
    let response: ControlResponse
    do {
      response = try connection.request(
        ControlRequest(.status, names: names), timeout: .seconds(10))
    } catch {
      // The status cannot be known.
      printError("mountctl: \(error.message)")
      throw error.kind == .permissionDenied ? Exit.permissionDenied : Exit.unreachable
    }
    guard response.ok, var mounts = response.mounts, let service = response.service else {
      printError("mountctl: \(response.error?.message ?? "mountsupd sent no status")")
      throw exitStatus(forRefusal: response.error)
    }
    if required { mounts = mounts.filter(\.required) }
    if json {
      print(StatusDocument(service: service, mounts: mounts).json)
    } else {
      print(StatusTable(mounts: mounts, colour: Terminal.supportsColour).render(), terminator: "")
      if let failure = StatusTable.reloadFailure(in: service.status) {
        print("\nlast reload failed, nothing changed: \(failure)")
      }
    }
    if !mounts.allSatisfy(\.isReady) { throw Exit.notReady }
  }
}

/// What `status --json` prints: the service and its mounts, with the protocol version.
struct StatusDocument: Encodable {
  var version = ControlProtocol.version
  var service: ServiceStatus
  var mounts: [MountStatus]

  /// Indented, keys sorted: for people and `jq` alike.
  var json: String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    // Only strings, numbers, booleans, arrays and nulls: encoding cannot fail.
    return String(decoding: try! encoder.encode(self), as: UTF8.self)
  }
}

enum Terminal {
  /// Colour only on a terminal, never when NO_COLOR is set or TERM is dumb.
  static var supportsColour: Bool {
    isatty(1) == 1 && getenv("NO_COLOR") == nil
      && getenv("TERM").map { String(cString: $0) != "dumb" } ?? false
  }
}

struct StatusTable {
  var mounts: [MountStatus]
  var colour: Bool

  func render() -> String {
    let header = ["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "MOUNTPOINT", "LAST ERROR"]
    let rows = mounts.map { mount in
      [
        mount.name, mount.state, mount.pid.map(String.init) ?? "-",
        mount.uptimeSeconds.map { formatDuration(.seconds(Int64($0))) } ?? "-",
        restarts(mount), mount.mountpoint, lastError(mount),
      ]
    }
    let widths = header.indices.map { column in
      ([header] + rows).map { $0[column].count }.max() ?? 0
    }
    var text = ""
    for (index, row) in ([header] + rows).enumerated() {
      let cells = row.enumerated().map { column, cell in
        let padded = column == row.count - 1 ? cell : cell.padding(to: widths[column])
        return column == 1 && index > 0 ? paint(padded, state: cell) : padded
      }
      text += cells.joined(separator: "  ") + "\n"
    }
    return text
  }

  /// The reload error that the service's STATUS text ends in after an invalid reload
  /// (`…; last reload failed: REASON`, see docs/control-protocol.md), if there is one.
  static func reloadFailure(in status: String) -> String? {
    guard let marker = status.firstRange(of: "last reload failed: ") else { return nil }
    return String(status[marker.upperBound...])
  }

  /// "4 (resumed 3×, last gap 6 ms)": resumed crashes are restarts the applications never saw.
  private func restarts(_ mount: MountStatus) -> String {
    guard mount.resumes > 0 else { return String(mount.restarts) }
    let gap = mount.lastResumeGapMilliseconds.map { ", last gap \(Int($0.rounded())) ms" } ?? ""
    return "\(mount.restarts) (resumed \(mount.resumes)×\(gap))"
  }

  private func lastError(_ mount: MountStatus) -> String {
    // Its old failure is history once an operator stopped it on purpose.
    if mount.stoppedByOperator { return "stopped by operator" }
    guard let error = mount.lastError else { return "-" }
    let flat = error.split(whereSeparator: \.isNewline).joined(separator: " ")
    // A terminal gets one line per mount; a pipe gets the whole text.
    return colour && flat.count > 80 ? String(flat.prefix(79)) + "…" : flat
  }

  private func paint(_ text: String, state: String) -> String {
    guard colour else { return text }
    let code: String
    switch state {
    case "ready": code = "32"
    case "starting", "stopping", "backoff": code = "33"
    case "failed", "exited": code = "31"
    default: return text
    }
    return "\u{1B}[\(code)m\(text)\u{1B}[0m"
  }
}

extension String {
  fileprivate func padding(to width: Int) -> String {
    count >= width ? self : self + String(repeating: " ", count: width - count)
  }
}
