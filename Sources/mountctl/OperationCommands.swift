import ArgumentParser
import FoundationEssentials
import Glibc
import MountControl
import MountDuration

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
    let response: ControlResponse
    do {
      response = try connection.request(
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

struct Abort: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Abort the FUSE connection of hung mounts, then restart them by their policy.",
    discussion: """
      For a mount known to hang before its hang_timeout finds it: every process blocked on it \
      gets an error at once (ECONNABORTED), the worker is ended (SIGTERM, then SIGKILL after \
      stop_timeout), the mount detached and started again by its restart policy. Waits until \
      the mount is ready again (or failed); counts as a failure for the start limit.

      Examples:
        mountctl abort photos
      """)

  @OptionGroup var operation: Operation

  func run() throws { try operation.run(.abort) }
}

struct Upgrade: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Replace the running mountsupd by a new binary without touching a mount.",
    discussion: """
      The daemon asks the new binary whether it can take over (mountsupd --can-resume), then \
      execs it in place: same pid, every worker, mount and restart history kept, readiness not \
      announced again. By default the binary is the file mountsupd was started from, as it is on \
      disk now, so `make install && mountctl upgrade` is the whole upgrade. A missing, \
      non-executable or refusing binary changes nothing; the exit status is 1 with the reason.

      Examples:
        mountctl upgrade
        mountctl upgrade --binary /opt/mountsup/bin/mountsupd
      """)

  @OptionGroup var connection: Connection

  @Option(help: "The binary to run instead of the file mountsupd was started from.")
  var binary: String?

  func run() throws {
    let client = try connection.connect()
    let response: ControlResponse
    do {
      response = try client.request(ControlRequest(.upgrade, binary: binary), timeout: nil)
    } catch {
      throw failure(error)
    }
    guard response.ok, let upgrade = response.upgrade else {
      printError("mountctl: \(response.error?.message ?? "upgrade failed: no reason given")")
      throw exitStatus(forRefusal: response.error)
    }
    let tenths = (upgrade.milliseconds * 10).rounded() / 10
    print(
      "upgraded from \(upgrade.from) to \(upgrade.to) in \(tenths) ms; \(upgrade.mountsKept) mounts kept"
    )
  }
}
