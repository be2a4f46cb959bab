import Foundation
import XCTest
import Yams

/// contrib/: the Grafana dashboard and the Prometheus alert rules use only metrics a live
/// mailswitch exposes, each as its type allows; the dashboard is a Grafana JSON model; the rules
/// pass `promtool check rules` and their unit tests (`promtool test rules`). promtool comes with
/// Debian's `prometheus` package (scripts/debian-packages): without it these tests fail.
extension ProxyIntegrationTests {
    static let dashboardPath = "contrib/grafana/mailswitch.json"
    static let alertRulesPath = "contrib/prometheus/mailswitch-alerts.yml"
    static let alertTestsPath = "contrib/prometheus/mailswitch-alerts.test.yml"

    func contribText(_ path: String) throws -> String {
        try String(contentsOf: Harness.repository.appendingPathComponent(path), encoding: .utf8)
    }

    /// Every `mailswitch_…` name in `text`.
    func mailswitchNames(in text: String) -> Set<String> {
        let regex = try! NSRegularExpression(pattern: "mailswitch_[a-z_]+")
        let range = NSRange(text.startIndex..., in: text)
        return Set(regex.matches(in: text, range: range).map { String(text[Range($0.range, in: text)!]) })
    }

    /// The names captured by `pattern`'s first group in `text`.
    func captures(_ pattern: String, in text: String) -> [String] {
        let regex = try! NSRegularExpression(pattern: pattern)
        return regex.matches(in: text, range: NSRange(text.startIndex..., in: text)).map {
            String(text[Range($0.range(at: 1), in: text)!])
        }
    }

    /// Metric families by name and type (`# TYPE name type`) in a scrape.
    func metricTypes(_ scrape: Scrape) -> [String: String] {
        var types: [String: String] = [:]
        for line in scrape.text.split(separator: "\n") where line.hasPrefix("# TYPE ") {
            let fields = line.split(separator: " ")
            if fields.count >= 4 { types[String(fields[2])] = String(fields[3]) }
        }
        return types
    }

    /// What is wrong with using `name` in a query against a scrape with these families; nil when
    /// nothing is. A histogram is only queried through its `_bucket`, `_sum` and `_count` series,
    /// and `rated` says the name is under rate()/irate()/increase(), which wants a counter.
    func problem(with name: String, rated: Bool, types: [String: String]) -> String? {
        if let type = types[name] {
            if type == "histogram" { return "\(name) is a histogram: query its _bucket, _sum or _count" }
            if rated && type != "counter" { return "\(name) is a \(type): rate() and increase() want a counter" }
            return nil
        }
        for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) {
            let base = String(name.dropLast(suffix.count))
            if types[base] == "histogram" { return nil }
        }
        return "\(name) is not in /metrics"
    }

    /// The main proxy's metrics port, from the example configuration's `metrics.address`.
    func exampleMetricsPort() throws -> Int {
        let config = try contribText("config/mailswitch.example.yaml")
        guard let address = captures(#"(?m)^metrics:\s*\n(?:\s*#.*\n)*\s+address:\s*"([^"]+)""#, in: config).first,
              let port = address.split(separator: ":").last.flatMap({ Int($0) }) else {
            throw HarnessError("no metrics.address in config/mailswitch.example.yaml")
        }
        return port
    }

    func promtool() throws -> String {
        let found = try Harness.run("sh", ["-c", "command -v promtool"], timeout: 10)
        let path = found.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        guard found.status == 0, !path.isEmpty else {
            throw HarnessError("promtool is not installed: it comes with Debian's prometheus package, which "
                               + "scripts/debian-packages lists (scripts/install-deps installs it)")
        }
        return path
    }

    // MARK: - The dashboard

    func testDashboardIsAGrafanaModelOnADatasourceVariable() throws {
        let text = try contribText(Self.dashboardPath)
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8))
        let dashboard = try XCTUnwrap(object as? [String: Any], "the dashboard is a JSON object")
        XCTAssertGreaterThanOrEqual(dashboard["schemaVersion"] as? Int ?? 0, 36)
        XCTAssertFalse((dashboard["title"] as? String ?? "").isEmpty)
        XCTAssertFalse((dashboard["uid"] as? String ?? "").isEmpty)

        let variables = (dashboard["templating"] as? [String: Any])?["list"] as? [[String: Any]] ?? []
        let source = try XCTUnwrap(variables.first { $0["type"] as? String == "datasource" }, "a datasource variable")
        XCTAssertEqual(source["query"] as? String, "prometheus")
        let sourceUID = "${\(source["name"] as? String ?? "")}"

        let panels = dashboard["panels"] as? [[String: Any]] ?? []
        let ids = panels.compactMap { $0["id"] as? Int }
        XCTAssertEqual(ids.count, panels.count, "every panel has an id")
        XCTAssertEqual(Set(ids).count, ids.count, "panel ids are unique")
        let graphs = panels.filter { $0["type"] as? String != "row" }
        XCTAssertGreaterThanOrEqual(graphs.count, 15)
        for panel in graphs {
            let title = panel["title"] as? String ?? "?"
            let datasource = panel["datasource"] as? [String: Any]
            XCTAssertEqual(datasource?["uid"] as? String, sourceUID, "\(title): on the datasource variable")
            let grid = panel["gridPos"] as? [String: Int] ?? [:]
            XCTAssertTrue((grid["x"] ?? -1) >= 0 && (grid["x"] ?? 0) + (grid["w"] ?? 0) <= 24 && (grid["h"] ?? 0) > 0,
                          "\(title): gridPos \(grid)")
            let targets = panel["targets"] as? [[String: Any]] ?? []
            XCTAssertFalse(targets.isEmpty, "\(title): no query")
            for target in targets {
                XCTAssertFalse((target["expr"] as? String ?? "").isEmpty, "\(title): empty expr")
                XCTAssertEqual((target["datasource"] as? [String: Any])?["uid"] as? String, sourceUID, title)
            }
        }

        // What the dashboard is for (issue 11): every family mailswitch exposes, and these views.
        let names = mailswitchNames(in: text)
        for family in Self.metricNames {
            XCTAssertTrue(names.contains { $0 == family || $0 == family + "_bucket" }, "the dashboard does not show \(family)")
        }
        let exprs = graphs.flatMap { ($0["targets"] as? [[String: Any]] ?? []).compactMap { $0["expr"] as? String } }
        let expected = [
            "sum by (backend) (mailswitch_sessions_open",
            "sum by (result) (rate(mailswitch_logins_total",
            "histogram_quantile(0.5, sum by (le) (rate(mailswitch_login_duration_seconds_bucket",
            "histogram_quantile(0.99, sum by (le) (rate(mailswitch_login_duration_seconds_bucket",
            "histogram_quantile(0.99, sum by (le) (rate(mailswitch_directory_lookup_duration_seconds_bucket",
            "rate(mailswitch_directory_errors_total",
            "mailswitch_change_feed_state{",
            #"mailswitch_route_cache_total{job=~"$job",instance=~"$instance",result="hit"}"#,
            "route_change|hold|kick",
            "sum by (backend, direction) (rate(mailswitch_relay_bytes_total",
            #"mailswitch_tls_handshakes_total{job=~"$job",instance=~"$instance",result="failed"}"#,
        ]
        for fragment in expected {
            XCTAssertTrue(exprs.contains { $0.contains(fragment) }, "no panel query contains \(fragment)")
        }
    }

    // MARK: - Against a live scrape

    func testDashboardAndAlertMetricsExistInALiveScrape() throws {
        let port = try exampleMetricsPort()
        let live = try scrape(port: port)
        let types = metricTypes(live)
        XCTAssertFalse(types.isEmpty, "no # TYPE lines on :\(port)/metrics:\n\(live.text)")

        for path in [Self.dashboardPath, Self.alertRulesPath] {
            let text = try contribText(path)
            let names = mailswitchNames(in: text)
            XCTAssertGreaterThanOrEqual(names.count, 8, "\(path) uses \(names.sorted())")
            let rated = Set(captures(#"(?:rate|irate|increase)\(\s*(mailswitch_[a-z_]+)"#, in: text))
            let problems = names.sorted().compactMap { problem(with: $0, rated: rated.contains($0), types: types) }
            XCTAssertEqual(problems, [], "\(path):\n\(problems.joined(separator: "\n"))\nscrape:\n\(live.text)")
        }
    }

    /// The checker itself: names that do not exist, bare histograms and rated gauges are caught.
    func testDashboardMetricCheckCatchesWrongNames() throws {
        let types = metricTypes(try scrape(port: try exampleMetricsPort()))
        XCTAssertNil(problem(with: "mailswitch_login_duration_seconds_bucket", rated: true, types: types))
        XCTAssertNil(problem(with: "mailswitch_logins_total", rated: true, types: types))
        XCTAssertNil(problem(with: "mailswitch_sessions_open", rated: false, types: types))
        XCTAssertNotNil(problem(with: "mailswitch_login_total", rated: true, types: types), "a misspelt name")
        XCTAssertNotNil(problem(with: "mailswitch_login_duration_seconds", rated: false, types: types), "a bare histogram")
        XCTAssertNotNil(problem(with: "mailswitch_sessions_open", rated: true, types: types), "rate() over a gauge")
        XCTAssertNotNil(problem(with: "mailswitch_logins_total_bucket", rated: true, types: types), "_bucket of a counter")
    }

    // MARK: - The alert rules

    func testDashboardAlertRulesHaveForSeverityAndAnnotations() throws {
        let text = try contribText(Self.alertRulesPath)
        let document = try XCTUnwrap(try Yams.load(yaml: text) as? [String: Any], "the rules file is a YAML mapping")
        let groups = try XCTUnwrap(document["groups"] as? [[String: Any]], "groups:")
        let rules = groups.flatMap { $0["rules"] as? [[String: Any]] ?? [] }
        var alerts: [String: [String: Any]] = [:]
        for rule in rules {
            let name = try XCTUnwrap(rule["alert"] as? String, "only alerting rules: \(rule)")
            XCTAssertNil(alerts[name], "\(name) twice")
            alerts[name] = rule
            XCTAssertFalse((rule["expr"] as? String ?? "").isEmpty, "\(name): expr")
            XCTAssertNotNil((rule["for"] as? String).flatMap { $0.range(of: #"^\d+[smh]$"#, options: .regularExpression) },
                            "\(name): for: \(rule["for"] ?? "missing")")
            let severity = (rule["labels"] as? [String: Any])?["severity"] as? String
            XCTAssertTrue(["critical", "warning", "info"].contains(severity ?? ""), "\(name): severity \(severity ?? "missing")")
            let annotations = rule["annotations"] as? [String: Any] ?? [:]
            for key in ["summary", "description"] {
                XCTAssertFalse((annotations[key] as? String ?? "").isEmpty, "\(name): annotations.\(key)")
            }
        }
        // The conditions issue 11 and the operators asked for.
        let wanted: [(alert: String, expr: String, for: String)] = [
            ("MailswitchInstanceDown", "up{job=\"mailswitch\"} == 0", "2m"),
            ("MailswitchTemporaryLoginFailures", "result=~\"temp_failed|timeout\"", "10m"),
            ("MailswitchAuthFailureRateHigh", "result=\"auth_failed\"", "10m"),
            ("MailswitchChangeFeedDisconnected", "mailswitch_change_feed_state == -1", "5m"),
            ("MailswitchDirectoryErrors", "mailswitch_directory_errors_total", "5m"),
            ("MailswitchBackendConnectErrors", "mailswitch_backend_connect_errors_total", "5m"),
            ("MailswitchDrainingTooLong", "== 503", "5m"),
        ]
        for (alert, expr, duration) in wanted {
            let rule = alerts[alert]
            XCTAssertNotNil(rule, "no \(alert) in \(alerts.keys.sorted())")
            XCTAssertTrue((rule?["expr"] as? String ?? "").contains(expr), "\(alert): \(rule?["expr"] ?? "")")
            XCTAssertEqual(rule?["for"] as? String, duration, alert)
        }
        // Every alert has a promtool unit test that expects it to fire.
        let tests = try XCTUnwrap(try Yams.load(yaml: try contribText(Self.alertTestsPath)) as? [String: Any])
        let cases = (tests["tests"] as? [[String: Any]] ?? []).flatMap { $0["alert_rule_test"] as? [[String: Any]] ?? [] }
        let firing = Set(cases.filter { !($0["exp_alerts"] as? [Any] ?? []).isEmpty }.compactMap { $0["alertname"] as? String })
        for name in alerts.keys.sorted() {
            XCTAssertTrue(firing.contains(name), "\(Self.alertTestsPath) never expects \(name) to fire")
        }
    }

    func testDashboardAlertRulesPassPromtool() throws {
        let promtool = try promtool()
        let rules = try contribText(Self.alertRulesPath)
        let count = rules.components(separatedBy: "- alert: ").count - 1
        let check = try Harness.run(promtool, ["check", "rules", Self.alertRulesPath], timeout: 60)
        XCTAssertEqual(check.status, 0, "\(check.stdout)\n\(check.stderr)")
        XCTAssertTrue(check.stdout.contains("SUCCESS: \(count) rules found"), "\(count) alerts: \(check.stdout)")

        let unit = try Harness.run(promtool, ["test", "rules", Self.alertTestsPath], timeout: 60)
        XCTAssertEqual(unit.status, 0, "promtool test rules:\n\(unit.stdout)\n\(unit.stderr)")
        XCTAssertTrue(unit.stdout.contains("SUCCESS"), unit.stdout)
    }

    /// Every PromQL query of the dashboard (panels and variables) parses: promtool checks them as
    /// recording rules, with Grafana's variables replaced by what Grafana would put there.
    func testDashboardQueriesParseAsPromQL() throws {
        let promtool = try promtool()
        let dashboard = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(try contribText(Self.dashboardPath).utf8))
            as? [String: Any])
        var queries: [String] = []
        for panel in dashboard["panels"] as? [[String: Any]] ?? [] {
            queries += (panel["targets"] as? [[String: Any]] ?? []).compactMap { $0["expr"] as? String }
        }
        for variable in (dashboard["templating"] as? [String: Any])?["list"] as? [[String: Any]] ?? [] {
            guard let definition = variable["definition"] as? String else { continue }
            // label_values(SELECTOR, label): Grafana's function; the selector is PromQL.
            let selector = captures(#"^label_values\((.*),\s*[a-zA-Z_]+\)$"#, in: definition)
            XCTAssertEqual(selector.count, 1, "variable \(variable["name"] ?? ""): \(definition)")
            queries += selector
        }
        XCTAssertGreaterThanOrEqual(queries.count, 20)
        var file = "groups:\n  - name: dashboard\n    rules:\n"
        for (index, query) in queries.enumerated() {
            let promql = query.replacingOccurrences(of: "$__rate_interval", with: "5m")
                .replacingOccurrences(of: "$__interval", with: "1m")
                .replacingOccurrences(of: "$job", with: "mailswitch")
                .replacingOccurrences(of: "$instance", with: ".+")
            XCTAssertFalse(promql.contains("$"), "an unknown variable in \(query)")
            let quoted = String(decoding: try JSONSerialization.data(withJSONObject: [promql], options: .withoutEscapingSlashes), as: UTF8.self).dropFirst().dropLast()
            file += "      - record: dashboard_query_\(index)\n        expr: \(quoted)\n"
        }
        let path = Self.labDirectory + "/dashboard-queries.yml"
        try file.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let check = try Harness.run(promtool, ["check", "rules", path], timeout: 60)
        XCTAssertEqual(check.status, 0, "\(check.stdout)\n\(check.stderr)\n\(file)")
        XCTAssertTrue(check.stdout.contains("SUCCESS: \(queries.count) rules found"), check.stdout)
    }
}
