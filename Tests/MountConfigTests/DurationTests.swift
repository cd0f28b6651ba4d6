import MountConfig
import MountControl
import MountDuration
import Testing

@Suite struct Durations {
  @Test(arguments: [
    ("100ms", Duration.milliseconds(100)),
    ("10s", .seconds(10)),
    ("2m", .seconds(120)),
    ("1h", .seconds(3600)),
    ("1m30s", .seconds(90)),
    ("1.5s", .milliseconds(1500)),
    ("250us", .microseconds(250)),
    ("250µs", .microseconds(250)),
    ("7ns", .nanoseconds(7)),
    (".5s", .milliseconds(500)),
    ("0s", .zero),
    ("1h1m1s1ms", .seconds(3661) + .milliseconds(1)),
    ("1.0000000001s", .seconds(1)),
  ])
  func parses(_ text: String, _ expected: Duration) {
    #expect(parseDuration(text) == expected)
  }

  @Test(arguments: [
    "", "10", "10 s", " 10s", "10sec", "1d", "-1s", "+1s", "s", ".s", "1..5s", "1s ",
    "9999999999999h", "5\u{301}s",
  ])
  func rejects(_ text: String) {
    #expect(parseDuration(text) == nil)
  }

  @Test(arguments: [
    (Duration.zero, "0s"),
    (.nanoseconds(7), "7ns"),
    (.microseconds(250), "250us"),
    (.nanoseconds(1500), "1.5us"),
    (.milliseconds(100), "100ms"),
    (.microseconds(2500), "2.5ms"),
    (.seconds(10), "10s"),
    (.milliseconds(1500), "1.5s"),
    (.seconds(60), "1m"),
    (.seconds(90), "1m30s"),
    (.seconds(3600), "1h"),
    (.seconds(3630), "1h30s"),
    (.seconds(7322) + .milliseconds(5), "2h2m2.005s"),
    (.seconds(-90), "-1m30s"),
  ])
  func formats(_ duration: Duration, _ expected: String) {
    #expect(formatDuration(duration) == expected)
  }

  @Test(arguments: [
    Duration.nanoseconds(1), .microseconds(999), .milliseconds(1001), .seconds(59),
    .seconds(86400 * 400), .seconds(3599) + .nanoseconds(999_999_999),
  ])
  func formattedDurationsParseBack(_ duration: Duration) {
    #expect(parseDuration(formatDuration(duration)) == duration)
  }

  /// `mountctl --timeout 5`: a plain number is seconds, as an integer is in the configuration.
  @Test(arguments: [
    ("5", Duration.seconds(5)),
    ("0", .zero),
    ("30s", .seconds(30)),
    ("1m30s", .seconds(90)),
    ("250ms", .milliseconds(250)),
  ])
  func commandLineDurations(_ text: String, _ expected: Duration) {
    #expect(parseCommandLineDuration(text) == expected)
  }

  @Test(arguments: ["", "-5", "5 s", "5.", "s", "99999999999999999999", "9223372036854775807"])
  func commandLineRejects(_ text: String) {
    #expect(parseCommandLineDuration(text) == nil)
  }
}

@Suite struct SharedDefaults {
  /// mountctl no longer links the configuration: its default socket is a copy that must agree.
  @Test func mountctlsDefaultSocketIsTheDaemons() {
    #expect(ControlProtocol.defaultSocketPath == SupervisorSettings.defaultControlSocket)
  }
}
