import ArgumentParser
import Glibc
import MountControl

struct Metrics: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Print the metrics of mountsupd in the Prometheus text format.",
    discussion: """
      The same text that [supervisor] metrics_file and metrics_listen serve, from the same state \
      as status: per mount up, state, restarts, failures by kind, time to ready and the instant \
      it became ready; the build, readiness and reloads of mountsupd. docs/metrics.md lists \
      every metric. status_group may read them.

      Examples:
        mountctl metrics
        mountctl metrics | grep '^mountsup_mount_up'
      """)

  @OptionGroup var connection: Connection

  func run() throws {
    let client = try connection.connect()
    let response: ControlResponse
    do {
      response = try client.request(ControlRequest(.metrics), timeout: .seconds(30))
    } catch {
      throw failure(error)
    }
    guard response.ok, let text = response.metrics else {
      printError(
        "mountctl: metrics failed: \(response.error?.message ?? "no metrics in the answer")")
      throw exitStatus(forRefusal: response.error)
    }
    print(text, terminator: "")
  }
}
