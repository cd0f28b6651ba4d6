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
    version: MountSupervisorRelease.identity)

  @Option(name: .long, help: "The configuration file.")
  var config: String = Configuration.defaultPath

  @Flag(
    name: .long,
    help: """
      Validate the configuration, print the resolved mounts and exit (0 valid, 1 invalid). \
      Also an error here: a command that is not found or not executable now (at start and \
      reload only a warning).
      """)
  var checkConfig = false

  @Flag(name: .long, help: "Log debug messages too.")
  var verbose = false

  @Option(
    name: .long,
    help: ArgumentHelp(
      """
      Say whether this binary can take over a running mountsupd whose state has this format \
      (exit 0, printing its version) or not (exit 1, saying why): what `mountctl upgrade` asks \
      the new binary before anything is given up.
      """, valueName: "format"))
  var canResume: Int?

  func run() throws {
    // A closed stdout or stderr (`mountsupd | head`, a log reader that went away) must never
    // end supervision: writes then fail with EPIPE, which the log handler ignores. Workers get
    // the default disposition back (the spawn shim resets every signal).
    signal(SIGPIPE, SIG_IGN)
    if let canResume {
      guard Supervisor.canResume(format: canResume) else {
        printError(
          "mountsupd \(MountSupervisorRelease.identity) cannot take over state format \(canResume); it reads \(Supervisor.upgradeFormats)"
        )
        throw ExitCode(1)
      }
      print(MountSupervisorRelease.identity)
      return
    }
    if checkConfig {
      do {
        let configuration = try ConfigLoader.load(path: config, options: .check())
        for warning in configuration.warnings { printError("mountsupd: warning: \(warning)") }
        print(configuration.renderResolved(), terminator: "")
      } catch {
        for warning in error.warnings { printError("mountsupd: warning: \(warning)") }
        for problem in error.errors { printError("mountsupd: invalid configuration: \(problem)") }
        throw ExitCode(1)
      }
      return
    }
    try runDaemon(config: config, verbose: verbose)
  }
}

/// Runs the supervisor on `path` until it stops; throws the exit code when it is not 0.
func runDaemon(config: String, verbose: Bool) throws {
  signal(SIGPIPE, SIG_IGN)
  // Before any other thread exists, so that every thread inherits the blocked signals.
  let signals = try Supervisor.captureSignals()
  let verbose = verbose
  LoggingSystem.bootstrap { label in
    var handler = SupervisorLogHandler(label: label)
    handler.logLevel = verbose ? .debug : .info
    return handler
  }
  let logger = Logger(label: "mountsupd")
  // The new binary of an upgrade takes over the running supervisor: the configuration that
  // ran, not the file as it is now (a changed file waits for a reload, as it did before).
  if let state = Supervisor.upgradeStateDescriptor() {
    let supervisor: Supervisor
    do {
      supervisor = try Supervisor(
        resumingFrom: state, signalFD: signals, logger: logger,
        reload: reloader(path: config, logger: logger))
    } catch {
      logger.critical("cannot take over after the upgrade: \(error)")
      throw ExitCode(1)
    }
    let code = try supervisor.run()
    if code != 0 { throw ExitCode(code) }
    return
  }
  logger.info("mountsupd \(MountSupervisorRelease.identity)")
  let configuration: Configuration
  do {
    configuration = try ConfigLoader.load(path: config)
  } catch {
    for warning in error.warnings { logger.warning("configuration: \(warning)") }
    for problem in error.errors { logger.critical("invalid configuration: \(problem)") }
    throw ExitCode(1)
  }
  for warning in configuration.warnings { logger.warning("configuration: \(warning)") }
  let supervisor = try Supervisor(
    configuration: configuration, signalFD: signals, logger: logger,
    reload: reloader(path: config, logger: logger))
  let code = try supervisor.run()
  if code != 0 { throw ExitCode(code) }
}

/// Reads the configuration again for a reload. The supervisor logs and reports the errors of an
/// invalid one; the warnings of a valid one are logged here.
func reloader(path: String, logger: Logger) -> () throws -> Configuration {
  {
    let next = try ConfigLoader.load(path: path)
    for warning in next.warnings { logger.warning("configuration: \(warning)") }
    return next
  }
}

func printError(_ text: String) {
  _ = (text + "\n").withCString { write(2, $0, strlen($0)) }
}

/// The command lines a service manager uses (`--config PATH`, `--verbose`) are read directly:
/// argument-parser's start-up (reflection over the command's properties) costs milliseconds,
/// which is most of the time to READY of a small configuration. Anything else, `--help` and
/// every error included, goes through argument-parser.
func serviceArguments(_ arguments: [String]) -> (config: String, verbose: Bool)? {
  var config = Configuration.defaultPath
  var verbose = false
  var index = 0
  while index < arguments.count {
    let argument = arguments[index]
    if argument == "--config", index + 1 < arguments.count, !arguments[index + 1].hasPrefix("-") {
      config = arguments[index + 1]
      index += 2
    } else if argument.hasPrefix("--config="), argument.count > "--config=".count {
      config = String(argument.dropFirst("--config=".count))
      index += 1
    } else if argument == "--verbose" {
      verbose = true
      index += 1
    } else {
      return nil
    }
  }
  return (config, verbose)
}

if let (config, verbose) = serviceArguments(Array(CommandLine.arguments.dropFirst())) {
  do {
    try runDaemon(config: config, verbose: verbose)
  } catch {
    MountSupervisorDaemon.exit(withError: error)
  }
} else {
  MountSupervisorDaemon.main()
}
