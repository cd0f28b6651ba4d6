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
      "Control a running mountsupd: status, start, stop, restart, reload, logs, wait-ready, metrics.",
    discussion: """
      Talks to mountsupd through its control socket: --socket PATH (before or after the \
      command), else $MOUNTSUP_SOCKET, else \(ControlProtocol.defaultSocketPath). Root and \
      members of [supervisor] admin_group may do everything; members of status_group may use \
      status, logs, wait-ready and metrics.

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
    version: MountSupervisorRelease.identity,
    subcommands: [
      Status.self, Start.self, Stop.self, Restart.self, Abort.self, Reload.self, Upgrade.self,
      Logs.self, WaitReady.self, Metrics.self,
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

  /// Sends one request on a connection of its own and waits for the answer. A daemon in the
  /// middle of an upgrade answers `upgrading`: the request is sent again, on a new connection,
  /// until the new binary serves it (within milliseconds; given up after 10 s).
  func request(_ request: ControlRequest, timeout: Duration?) throws(ControlClientError)
    -> ControlResponse
  {
    var retries = 0
    while true {
      let response = try ControlClient(socketPath: socket).request(request, timeout: timeout)
      guard response.error?.code == .upgrading, retries < 100 else { return response }
      retries += 1
      usleep(100_000)
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

MountCtl.main(Array(reorderedArguments(Array(CommandLine.arguments.dropFirst()))))
