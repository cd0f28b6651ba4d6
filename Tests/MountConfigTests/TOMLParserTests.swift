import Foundation
import Testing

@testable import MountConfig

/// The configuration's TOML parser, against TOML 1.0 and against Python's `tomllib` (the
/// reference parser of the standard library) on the same texts.
@Suite struct TOMLParserTests {
  @Test func valuesOfEveryType() throws {
    let table = try TOMLParser.parse(
      #"""
      basic = "tab\there \"quoted\" \\ \u00E9 \U0001F600"
      literal = 'C:\Users\nobody'
      multi = """
      Roses \
         are red
      ""two quotes""\""""
      raw = '''
      first line
        'kept' \n'''
      ints = [42, +17, -17, 1_000, 0xDEAD_beef, 0o755, 0b1101, 0, -0]
      floats = [3.14, -0.01, 5e+22, 6.626e-34, 1_000.5, inf, -inf]
      flags = [true, false]
      when = [1979-05-27T07:32:00Z, 1979-05-27 07:32:00.999-07:00, 1979-05-27T07:32:00]
      day = 1979-05-27
      time = 07:32:00.5
      """#)
    #expect(table["basic"]?.string == "tab\there \"quoted\" \\ é 😀")
    #expect(table["literal"]?.string == #"C:\Users\nobody"#)
    #expect(table["multi"]?.string == "Roses are red\n\"\"two quotes\"\"\"")
    #expect(table["raw"]?.string == "first line\n  'kept' \\n")
    #expect(table["ints"]?.array?.map(\.int) == [42, 17, -17, 1000, 0xDEAD_BEEF, 0o755, 13, 0, 0])
    let floats = try #require(table["floats"]?.array)
    #expect(floats.map(\.type) == Array(repeating: .double, count: 7))
    #expect(table["flags"]?.array?.map(\.bool) == [true, false])
    #expect(table["when"]?.array?.map(\.type) == [.dateTime, .dateTime, .dateTime])
    #expect(table["day"]?.type == .date)
    #expect(table["time"]?.type == .time)
  }

  @Test func tablesDottedKeysInlineTablesAndArraysOfTables() throws {
    let table = try TOMLParser.parse(
      """
      top = 1
      [a.b.c]
      x = 1
      [a]  # defines a, made on the way to a.b.c
      y = 2
      [fruit]
      apple.color = "red"
      apple.taste.sweet = true
      [fruit.apple.texture]  # a sub-table of a table of dotted keys
      smooth = true
      [mounts."photos.nas"]
      environment = { A = "1", nested.B = "2" }
      [[products]]
      name = "Hammer"
      [products.maker]
      city = "Paris"
      [[products]]
      name = "Nail"\r
      last = true
      """)
    #expect(table.keys == ["a", "fruit", "mounts", "products", "top"], "in byte order")
    #expect(table["a"]?.table?["b"]?.table?["c"]?.table?["x"]?.int == 1)
    #expect(table["a"]?.table?["y"]?.int == 2)
    let apple = try #require(table["fruit"]?.table?["apple"]?.table)
    #expect(apple.keys == ["color", "taste", "texture"])
    #expect(apple["texture"]?.table?["smooth"]?.bool == true)
    let mount = try #require(table["mounts"]?.table?["photos.nas"]?.table)
    #expect(mount["environment"]?.table?["nested"]?.table?["B"]?.string == "2")
    let products = try #require(table["products"]?.array)
    #expect(products.map { $0.table?["name"]?.string } == ["Hammer", "Nail"])
    #expect(products[0].table?["maker"]?.table?["city"]?.string == "Paris")
    #expect(products[1].table?["last"]?.bool == true, "after a CRLF line end")
  }

  @Test(arguments: [
    ("a = 1\na = 2\n", 2, "defined more than once"),
    ("[a]\n[a]\n", 2, "defined more than once"),
    ("[a]\nb.c = 1\n[a.b]\n", 3, "defined more than once"),
    ("[a.b.c]\n[a]\nb.c.d = 1\n", 3, "defined elsewhere"),
    ("a = {b = 1}\n[a]\n", 2, "defined more than once"),
    ("a = {b = 1}\na.c = 2\n", 2, "defined elsewhere"),
    ("a = []\n[[a]]\n", 2, "not an array of tables"),
    ("a = \"open\n", 1, "not closed"),
    ("a = \"\\q\"\n", 1, "unknown escape"),
    ("a = 012\n", 1, "not a value"),
    ("a = 9223372036854775808\n", 1, "out of range"),
    ("a = 1.\n", 1, "not a value"),
    ("x = 1\na =\n", 2, "expected a value"),
    ("a = hello\n", 1, "not a value"),
    ("a = \"\u{1}\"\n", 1, "control character"),
    ("[a\nb = 1\n", 1, "expected \"]\""),
    ("a = 1 b = 2\n", 1, "end of the line"),
    ("a = 1\rb = 2\n", 1, "end of the line"),
    ("a = 2021-02-30\n", 1, "no such date"),
    ("a = [1 2]\n", 1, "expected \",\" or \"]\""),
    ("a = {b = 1,}\n", 1, "expected a key"),
  ])
  func invalidTextsSayWhereAndWhy(text: String, line: Int, words: String) {
    do {
      let table = try TOMLParser.parse(text)
      Issue.record("accepted \(text.debugDescription): \(table.keys)")
    } catch {
      #expect(error.line == line, "\(text.debugDescription): \(error)")
      #expect(error.message.contains(words), "\(text.debugDescription): \(error)")
    }
  }

  /// Texts that TOML allows or forbids in less common ways; each must be accepted or refused as
  /// `tomllib` does, and read to the same values.
  static let differentialTexts = [
    "a = 'x'\nb = \"\"\"\n\"\"\"\nc = ''''''\n",
    "\"quoted key\" = 1\n'literal key' = 2\n\"\" = 3\n",
    "a.b . c = 1\n a . d = 2\n",
    "x = [ [1, 2], [\"a\", 'b'], [ ], [{}], ]\n",
    "x = [\n  1, # one\n  2,\n]\n",
    "[a]\n[a.b]\n[a.c]\n",
    "[[a]]\n[[a.b]]\nx = 1\n[[a]]\n",
    "a = \"\"\"\\\n\n   x\\\n  \"\"\"\n",
    "a = \"\"\"x\"\"\"\"\"\n",
    "a = '''x''''\n",
    "a = 0x1F\nb = 0o17\nc = 0b11\nd = +0\ne = -0.0\nf = 1e1_0\n",
    "a = 0x_1\n",
    "a = 1__0\n",
    "a = +0x1\n",
    "a = 1979-05-27T07:32:00+25:00\n",
    "a = 1979-05-27T07:32\n",
    "a = 24:00:00\n",
    "a = tru\n",
    "a = {}\nb = { c = { d = 1 } }\n",
    "a = { b = 1\n}\n",
    "[a]\nb = 1\n[a.b.c]\n",
    "a = 1 # comment \n# only a comment\n\n",
    "[ a . \"b c\" ]\nx = 1\n",
    "[[ a ]]\n",
    "[ [a] ]\n",
    "a = \"\\u0000\"\n",
    "a = \"\\uD800\"\n",
    "a.\"b.c\".d = 1\n",
    "1 = 2\n-_ = 3\n",
    "a = -inf\nb = +nan\n",
    "a = 1\n[b]\na = 2\n",
    "[x]\ny.z = 1\n[x.y]\n",
    "a = 00:00:00\nb = 1979-05-27t07:32:00z\n",
    "a = [1, 'x', 2.5, true, 1979-05-27, [], {}]\n",
    "[a.b]\n[a]\nb.c = 1\n",
    "[a]\n[a.b]\n[a]\n",
    "a = 1979-05-27 # a date\nb=1\nc = 0.0\nd = 1e0\ne = 1E+0\n",
    "a = \"\\e\"\n",
    "a = \"\\x41\"\n",
    "a = \"tab\tinside\" # and\there\n",
    "a = [\n]\nb = [,]\n",
    "[[a]]\n[a]\n",
    "[a]\n[[a]]\n",
    "a.b = 1\n[a]\n",
    "[a]\nx.y = 1\n[a.x.z]\n",
    "a = \"\"\"\n  two\n  lines\"\"\"\nb = 'it''s'\n",
    "a = 'it''s'\n",
    "a = 1_000.0_1e1_0\nb = 0e0\nc = -0x1\n",
    "a = 07\nb = 1979-5-27\n",
  ]

  @Test func acceptsAndRefusesWhatTomllibDoes() throws {
    let script = """
      import json, math, sys, tomllib, datetime
      def tag(v):
          if isinstance(v, bool): return ["bool", v]
          if isinstance(v, int): return ["int", str(v)]
          if isinstance(v, float): return ["float", "nan" if math.isnan(v) else repr(v)]
          if isinstance(v, str): return ["string", v]
          if isinstance(v, datetime.datetime): return ["dateTime"]
          if isinstance(v, datetime.date): return ["date"]
          if isinstance(v, datetime.time): return ["time"]
          if isinstance(v, list): return ["array", [tag(x) for x in v]]
          return ["table", {k: tag(x) for k, x in v.items()}]
      out = []
      for text in json.load(sys.stdin):
          try: out.append(tag(tomllib.loads(text)))
          except tomllib.TOMLDecodeError: out.append(None)
      json.dump(out, sys.stdout)
      """
    let python = Process()
    python.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
    python.arguments = ["-c", script]
    let input = Pipe()
    let output = Pipe()
    python.standardInput = input
    python.standardOutput = output
    try python.run()
    try input.fileHandleForWriting.write(
      contentsOf: JSONSerialization.data(withJSONObject: Self.differentialTexts))
    try input.fileHandleForWriting.close()
    let answer = output.fileHandleForReading.readDataToEndOfFile()
    python.waitUntilExit()
    let expected = try #require(JSONSerialization.jsonObject(with: answer) as? [Any])

    for (text, reference) in zip(Self.differentialTexts, expected) {
      let ours = try? TOMLParser.parse(text)
      if reference is NSNull {
        #expect(ours == nil, "tomllib refuses \(text.debugDescription); accepted")
      } else if let ours {
        #expect(
          describe(.table(ours)) == canonical(reference),
          "\(text.debugDescription): \(describe(.table(ours))) ≠ \(canonical(reference))")
      } else {
        Issue.record("tomllib accepts \(text.debugDescription); refused")
      }
    }
  }

  /// A value in the shape of the script's tags, as one comparable string.
  private func describe(_ value: TOMLValue) -> String {
    switch value {
    case .string(let text): "string:\(text.debugDescription)"
    case .integer(let number): "int:\(number)"
    case .float(let number): "float:\(number.isNaN ? "nan" : "\(number)")"
    case .boolean(let flag): "bool:\(flag)"
    case .dateTime: "dateTime"
    case .date: "date"
    case .time: "time"
    case .array(let elements): "[" + elements.map(describe).joined(separator: ",") + "]"
    case .table(let table):
      "{"
        + table.keys.sorted().map { "\($0.debugDescription)=\(describe(table[$0]!))" }
        .joined(separator: ",") + "}"
    }
  }

  private func canonical(_ tagged: Any) -> String {
    guard let pair = tagged as? [Any], let kind = pair.first as? String else { return "?" }
    switch kind {
    case "string": return "string:\((pair[1] as! String).debugDescription)"
    case "int": return "int:\(pair[1] as! String)"
    case "float": return "float:\(pair[1] as! String)"
    case "bool": return "bool:\((pair[1] as! NSNumber).boolValue)"
    case "array": return "[" + (pair[1] as! [Any]).map(canonical).joined(separator: ",") + "]"
    case "table":
      let entries = pair[1] as! [String: Any]
      return "{"
        + entries.keys.sorted().map { "\($0.debugDescription)=\(canonical(entries[$0]!))" }
        .joined(separator: ",") + "}"
    default: return kind
    }
  }
}
