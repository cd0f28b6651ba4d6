import ArgumentParser
import FoundationEssentials
import Glibc
import MountControl
import MountDuration

/// `mountctl`: the operator's command line for a running `mountsupd`, over its control socket.
struct MountCtl: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "mountctl",
    abstract:
      "Control a running mountsupd: status, start, stop, restart, reload, logs, wait-ready.",
    discussion: """
      Talks to mountsupd through its control socket: --socket PATH (before or after the \
      command), else $MOUNTSUP_SOCKET, else \(ControlProtocol.defaultSocketPath). Root and \
      members of [supervisor] admin_group may do everything; members of status_group may use \
      status, logs and wait-ready.

      Exit codes: 0 success (status: every listed mount ready), 1 failure (reload: also when an \
      added or changed mount failed), 3 some mount not ready (status, wait-ready timeout), \
      4 mountsupd cannot be reached, 64 invalid command line, 77 permission denied.

      Examples:
        mountctl status
        mountctl status photos --json
        mountctl restart photos
        mountctl reload
        mountctl logs photos -n 20 -f
        mountctl wait-ready --timeout 30s && mount --bind /mnt/photos /srv/www/photos
      """,
    version: MountSupervisorRelease.version,
    subcommands: [
      Status.self, Start.self, Stop.self, Restart.self, Reload.self, Logs.self, WaitReady.self,
    ])
}

/// Exit codes shared by every command, after LSB `status` and sysexits.h; a health check can
/// tell "down" (4) from "not allowed to ask" (77) and from a wrong command line (64, EX_USAGE,
/// which argument-parser exits with).
enum Exit {
  static let failure = ExitCode(1)
  static let notReady = ExitCode(3)
  static let unreachable = ExitCode(4)
  /// EX_NOPERM: the kernel refused the socket, or mountsupd refused the request.
  static let permissionDenied = ExitCode(77)
}

struct Connection: ParsableArguments {
  @Option(
    name: .long,
    help:
      "The control socket of mountsupd (default: $MOUNTSUP_SOCKET, else \(ControlProtocol.defaultSocketPath)).",
    completion: .file())
  var socket: String = defaultSocket()

  /// Connects, or exits 4 (77 when refused) with the socket path in the message.
  func connect() throws -> ControlClient {
    do {
      return try ControlClient(socketPath: socket)
    } catch {
      throw failure(error)
    }
  }
}

/// Prints the client error and gives the exit code it stands for.
func failure(_ error: ControlClientError) -> ExitCode {
  printError("mountctl: \(error.message)")
  switch error.kind {
  case .unreachable: return Exit.unreachable
  case .permissionDenied: return Exit.permissionDenied
  case .broken, .timeout: return Exit.failure
  }
}

/// The exit code of a response that is not `ok`: 77 when mountsupd refused the caller, else
/// `otherwise`.
func exitStatus(forRefusal error: ControlError?, otherwise: ExitCode = Exit.failure) -> ExitCode {
  error?.code == .permissionDenied ? Exit.permissionDenied : otherwise
}

func printError(_ text: String) {
  _ = (text + "\n").withCString { write(2, $0, strlen($0)) }
}

/// `MOUNTSUP_SOCKET` when set and not empty, else the daemon's default.
func defaultSocket() -> String {
  if let value = getenv("MOUNTSUP_SOCKET").map({ String(cString: $0) }), !value.isEmpty {
    return value
  }
  return ControlProtocol.defaultSocketPath
}

/// `mountctl --socket PATH status` as well as `mountctl status --socket PATH`: argument-parser
/// reads a subcommand's options only after its name, so `--socket` options given before the
/// command are moved behind it.
func reorderedArguments(_ arguments: [String]) -> [String] {
  var leading: [String] = []
  var rest = arguments[...]
  while let first = rest.first {
    if first == "--socket", rest.count >= 2 {
      leading += rest.prefix(2)
      rest = rest.dropFirst(2)
    } else if first.hasPrefix("--socket=") {
      leading.append(first)
      rest = rest.dropFirst()
    } else {
      break
    }
  }
  guard !leading.isEmpty, let command = rest.first, !command.hasPrefix("-"), command != "help"
  else { return arguments }
  return [command] + leading + rest.dropFirst()
}

/// Mount names for shell completion, asked of the daemon (silently none when it is not there).
let mountNameCompletion = CompletionKind.custom { words, _, _ in
  var socket = defaultSocket()
  if let index = words.lastIndex(of: "--socket"), index + 1 < words.count {
    socket = words[index + 1]
  }
  guard let client = try? ControlClient(socketPath: socket, connectTimeout: .seconds(1)),
    let response = try? client.request(ControlRequest(.status), timeout: .seconds(2))
  else { return [] }
  return response.mounts?.map(\.name) ?? []
}

// MARK: status

struct Status: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Show the state of the mounts (all, or those named).",
    discussion: """
      Columns: name, state (stopped, starting, ready, backoff, stopping, exited, failed), worker \
      pid, time since the mount was confirmed ready, restarts, mountpoint, and the last failure in \
      the worker's own words ("stopped by operator" for a mount stopped with mountctl stop). \
      After an invalid reload, a line below the table says why it failed. --json prints the \
      documented JSON form (docs/control-protocol.md).

      Exits 0 when every listed mount is ready, 3 when some is not, 4 when mountsupd cannot be \
      reached or does not answer, 77 when it refuses the caller, 1 on other errors (such as an \
      unknown name).

      Examples:
        mountctl status
        mountctl status photos media
        mountctl status --json | jq -r '.mounts[] | select(.state != "ready") | .name'
      """)

  @OptionGroup var connection: Connection

  @Argument(help: "Mounts to show; all when none are named.", completion: mountNameCompletion)
  var names: [String] = []

  @Flag(name: .long, help: "Print JSON instead of a table.")
  var json = false

  func run() throws {
    let response: ControlResponse
    do {
      response = try connection.connect().request(
        ControlRequest(.status, names: names), timeout: .seconds(10))
    } catch let error as ControlClientError {
      // The status cannot be known.
      printError("mountctl: \(error.message)")
      throw error.kind == .permissionDenied ? Exit.permissionDenied : Exit.unreachable
    }
    guard response.ok, let mounts = response.mounts, let service = response.service else {
      printError("mountctl: \(response.error?.message ?? "mountsupd sent no status")")
      throw exitStatus(forRefusal: response.error)
    }
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
        String(mount.restarts),
        mount.mountpoint, lastError(mount),
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

// MARK: start, stop, restart

/// The shared body of start, stop and restart.
struct Operation: ParsableArguments {
  @OptionGroup var connection: Connection

  @Argument(help: "The mounts.", completion: mountNameCompletion)
  var names: [String]

  @Flag(
    name: .customLong("no-block"),
    help: "Return at once instead of waiting until the state is reached.")
  var noBlock = false

  func run(_ command: ControlCommand) throws {
    let client = try connection.connect()
    let response: ControlResponse
    do {
      response = try client.request(
        ControlRequest(command, names: names, noBlock: noBlock), timeout: nil)
    } catch {
      throw failure(error)
    }
    for mount in response.mounts ?? [] {
      var line = "\(mount.name): \(mount.detail)"
      if let pid = mount.pid, mount.isReady { line += " (pid \(pid))" }
      print(line)
    }
    guard response.ok else {
      printError(
        "mountctl: \(command.rawValue) failed: \(response.error?.message ?? "no reason given")")
      for mount in response.mounts ?? []
      where !mount.isReady && !mount.lastErrorOutput.isEmpty && command != .stop {
        printError("last output of \(mount.name):")
        for line in mount.lastErrorOutput.suffix(10) { printError("  | \(line)") }
      }
      throw exitStatus(forRefusal: response.error)
    }
  }
}

struct Start: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Start mounts and wait until they are ready (or failed, saying why).",
    discussion: """
      Also clears an operator's stop and a failed state. A start that fails is reported at its \
      first failure, with the worker's words, while the restart policy goes on retrying.

      Examples:
        mountctl start photos
        mountctl start photos media --no-block
      """)

  @OptionGroup var operation: Operation

  func run() throws { try operation.run(.start) }
}

struct Stop: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Stop mounts (unmount, then end the worker) and wait until they are stopped.",
    discussion: """
      An operator's stop sticks: the mount is not restarted, not even by a reload, until it is \
      started again with mountctl start.

      Examples:
        mountctl stop photos
        mountctl stop photos --no-block
      """)

  @OptionGroup var operation: Operation

  func run() throws { try operation.run(.stop) }
}

struct Restart: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Restart mounts and wait until they are ready again (or failed).",
    discussion: """
      Examples:
        mountctl restart photos
      """)

  @OptionGroup var operation: Operation

  func run() throws { try operation.run(.restart) }
}

// MARK: reload

struct Reload: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract:
      "Re-read the configuration and apply it; return when the new set of mounts has settled.",
    discussion: """
      Added mounts are started, removed ones stopped, changed ones restarted, unchanged ones left \
      alone (same worker, never remounted). Returns when every added and changed mount is ready or \
      has failed. Exits 0 when every added and changed mount is ready (or stopped by an \
      operator), 1 when one failed (the new configuration is applied all the same) or the \
      configuration is invalid (then nothing changed). This is what ExecReload= of \
      mountsupd.service runs.

      Examples:
        mountctl reload
      """)

  @OptionGroup var connection: Connection

  func run() throws {
    let client = try connection.connect()
    let response: ControlResponse
    do {
      response = try client.request(ControlRequest(.reload), timeout: nil)
    } catch {
      throw failure(error)
    }
    guard response.ok, let reload = response.reload else {
      printError("mountctl: reload failed: \(response.error?.message ?? "no reason given")")
      throw exitStatus(forRefusal: response.error)
    }
    let states = Dictionary((response.mounts ?? []).map { ($0.name, $0) }) { first, _ in first }
    func list(_ names: [String], withState: Bool) -> String {
      guard !names.isEmpty else { return "none" }
      return names.map { name in
        guard withState, let mount = states[name] else { return name }
        return "\(name) (\(mount.detail))"
      }.joined(separator: ", ")
    }
    print("added: \(list(reload.added, withState: true))")
    print("removed: \(list(reload.removed, withState: false))")
    print("changed: \(list(reload.changed, withState: true))")
    print("unchanged: \(list(reload.unchanged, withState: false))")
    // The answer carries the added and changed mounts; one that is neither ready nor held by an
    // operator's stop did not come up.
    let failed = (response.mounts ?? []).filter { !$0.isReady && !$0.stoppedByOperator }
    guard failed.isEmpty else {
      printError(
        "mountctl: reload applied, but "
          + failed.map { "\($0.name) is not ready (\($0.detail))" }.joined(separator: "; "))
      for mount in failed where !mount.lastErrorOutput.isEmpty {
        printError("last output of \(mount.name):")
        for line in mount.lastErrorOutput.suffix(10) { printError("  | \(line)") }
      }
      throw Exit.failure
    }
  }
}

// MARK: logs

struct Logs: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Show a mount's captured worker output (stdout and stderr, the last 200 lines).",
    discussion: """
      Examples:
        mountctl logs photos
        mountctl logs photos -n 20
        mountctl logs photos -f
      """)

  @OptionGroup var connection: Connection

  @Argument(help: "The mount.", completion: mountNameCompletion)
  var name: String

  @Option(name: [.customShort("n"), .long], help: "Show only the last N lines.")
  var lines: Int?

  @Flag(name: .shortAndLong, help: "Keep printing new lines as the worker writes them.")
  var follow = false

  func validate() throws {
    if let lines, lines < 0 { throw ValidationError("-n must not be negative") }
  }

  func run() throws {
    do {
      let client = try connection.connect()
      var response = try client.request(
        ControlRequest(.logs, names: [name], lines: lines, follow: follow), timeout: .seconds(10))
      while true {
        guard response.ok else {
          printError("mountctl: \(response.error?.message ?? "no reason given")")
          throw exitStatus(forRefusal: response.error)
        }
        for line in response.lines ?? [] { print(visible(line)) }
        fflush(nil)
        guard response.more == true else { return }
        response = try client.receive(timeout: nil)
      }
    } catch let error as ControlClientError {
      throw failure(error)
    }
  }
}

// MARK: wait-ready

struct WaitReady: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "wait-ready",
    abstract: "Wait until mounts are confirmed ready: the barrier before using them.",
    discussion: """
      Without names, waits for every configured mount that is not stopped by an operator, \
      optional ones (required = false) included: stricter than the service's READY=1, which \
      waits only for required mounts. Name the mounts to wait for only some. Exits 0 when all \
      are ready, 1 as soon as one has failed (or was stopped or removed), 3 when the timeout ran \
      out first. Without --timeout it waits until one or the other.

      Examples:
        mountctl wait-ready
        mountctl wait-ready photos --timeout 30s
      """)

  @OptionGroup var connection: Connection

  @Argument(help: "Mounts to wait for; all when none are named.", completion: mountNameCompletion)
  var names: [String] = []

  @Option(
    name: .long, help: "Give up after this long, e.g. 500ms, 30s, 2m; a plain number is seconds.")
  var timeout: String?

  func validate() throws {
    if let timeout, parseCommandLineDuration(timeout) == nil {
      throw ValidationError(
        "invalid --timeout \"\(timeout)\": use e.g. 500ms, 30s, 2m, 1m30s, or 5 for 5 seconds")
    }
  }

  func run() throws {
    let limit = timeout.flatMap(parseCommandLineDuration)
    let request = ControlRequest(
      .waitReady, names: names,
      timeoutMilliseconds: limit.map {
        $0.components.seconds * 1000 + $0.components.attoseconds / 1_000_000_000_000_000
      })
    let client = try connection.connect()
    let response: ControlResponse
    do {
      // The daemon answers at the timeout; the client's own limit only guards against a hung daemon.
      response = try client.request(request, timeout: limit.map { $0 + .seconds(10) })
    } catch {
      throw failure(error)
    }
    if response.ok {
      print("ready: \((response.mounts ?? []).map(\.name).joined(separator: ", "))")
      return
    }
    printError("mountctl: \(response.error?.message ?? "no reason given")")
    throw response.error?.code == .timeout ? Exit.notReady : exitStatus(forRefusal: response.error)
  }
}

MountCtl.main(Array(reorderedArguments(Array(CommandLine.arguments.dropFirst()))))

/// A worker's line with its control characters made visible (ESC as `^[`, DEL as `^?`): a
/// worker's output must not drive the operator's terminal (escape sequences can rewrite the
/// screen, set the title or worse). Tabs stay.
func visible(_ line: String) -> String {
  guard line.unicodeScalars.contains(where: { $0.value < 0x20 && $0 != "\t" || $0.value == 0x7F })
  else { return line }
  var text = ""
  for scalar in line.unicodeScalars {
    switch scalar.value {
    case 0x09: text.unicodeScalars.append(scalar)
    case 0..<0x20: text += "^" + String(UnicodeScalar(UInt8(scalar.value) + 0x40))
    case 0x7F: text += "^?"
    default: text.unicodeScalars.append(scalar)
    }
  }
  return text
}
