import ArgumentParser
import Glibc
import Logging
import MountConfig
import MountControl
import MountRuntime

/// `mountsupd`: runs every configured FUSE worker in the foreground, confirms each mount, tells
/// the service manager READY only then, and restarts what crashes.
struct MountSupervisorDaemon: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "mountsupd",
    abstract: "Supervise FUSE mounts: start, confirm, restart and cleanly stop their workers.",
    discussion: """
      Reads mount specs (TOML), starts each FUSE worker in the foreground and sends READY=1 to \
      the service manager (NOTIFY_SOCKET) only when every required mount is confirmed in the \
      kernel's mount table. SIGHUP reloads the configuration; SIGTERM or SIGINT unmounts \
      everything, children before parents, and exits.

      Examples:
        mountsupd --config /etc/mountsup/mounts.toml
        mountsupd --check-config --config ./mounts.toml
      """,
    version: MountSupervisorRelease.version)

  @Option(name: .long, help: "The configuration file.")
  var config: String = Configuration.defaultPath

  @Flag(
    name: .long,
    help: "Validate the configuration, print the resolved mounts and exit (0 valid, 1 invalid).")
  var checkConfig = false

  @Flag(name: .long, help: "Log debug messages too.")
  var verbose = false

  func run() throws {
    // A closed stdout or stderr (`mountsupd | head`, a log reader that went away) must never
    // end supervision: writes then fail with EPIPE, which the log handler ignores. Workers get
    // the default disposition back (the spawn shim resets every signal).
    signal(SIGPIPE, SIG_IGN)
    if checkConfig {
      do {
        let configuration = try ConfigLoader.load(path: config)
        print(configuration.renderResolved(), terminator: "")
      } catch {
        printError("mountsupd: invalid configuration: \(error)")
        throw ExitCode(1)
      }
      return
    }
    // Before any other thread exists, so that every thread inherits the blocked signals.
    let signals = try Supervisor.captureSignals()
    let verbose = verbose
    LoggingSystem.bootstrap { label in
      var handler = SupervisorLogHandler(label: label)
      handler.logLevel = verbose ? .debug : .info
      return handler
    }
    let logger = Logger(label: "mountsupd")
    let configuration: Configuration
    do {
      configuration = try ConfigLoader.load(path: config)
    } catch {
      logger.critical("invalid configuration: \(error)")
      throw ExitCode(1)
    }
    let path = config
    let supervisor = try Supervisor(
      configuration: configuration, signalFD: signals, logger: logger,
      reload: { try ConfigLoader.load(path: path) })
    let code = try supervisor.run()
    if code != 0 { throw ExitCode(code) }
  }
}

func printError(_ text: String) {
  _ = (text + "\n").withCString { write(2, $0, strlen($0)) }
}

MountSupervisorDaemon.main()
