import CCurl
import CCurlShims
import Dispatch
import Routing

/// Where and how tokens are introspected: the same for every connection of a pool.
struct IntrospectionEndpoint: Sendable {
    let url: String
    /// HTTP Basic client authentication (RFC 7662 §2.1 via RFC 6749 §2.3.1): the id and the
    /// secret each form-encoded before they are joined, as that section asks.
    let basicUser: String?
    let basicPassword: String?
    let timeoutMilliseconds: Int
}

/// libcurl's process-wide set-up, done once before the first handle: `curl_easy_init` would
/// otherwise do it itself, and that is not thread-safe before libcurl 7.84. A static `let` is
/// initialised exactly once whichever thread comes first.
enum LibCurl {
    static let isInitialised: Bool = curl_global_init(Int(CURL_GLOBAL_DEFAULT)) == CURLE_OK
}

/// One libcurl easy handle and the serial queue it is used on. The handle is kept between
/// checks, so libcurl keeps the connection to the authorization server alive and reuses it
/// (one TCP and TLS handshake per connection, not per login); it is made on first use, so a
/// pool that never checks a token never connects.
///
/// `@unchecked Sendable`: the handle, its header list and the answer's buffer are touched only
/// on `queue`, and libcurl's write callback runs inside `curl_easy_perform` on that queue too.
final class IntrospectionConnection: @unchecked Sendable {
    /// An answer longer than this is not an introspection answer; libcurl stops reading it.
    static let maxAnswerBytes = 64 * 1024

    let queue: DispatchQueue
    private let endpoint: IntrospectionEndpoint
    private var handle: UnsafeMutableRawPointer?
    private var headers: UnsafeMutablePointer<curl_slist>?
    /// The answer's body so far, appended to by the write callback.
    private var answer: [UInt8] = []
    private var answerTooLong = false

    init(index: Int, endpoint: IntrospectionEndpoint) {
        queue = DispatchQueue(label: "mailswitch.introspection.\(index)")
        self.endpoint = endpoint
    }

    deinit {
        if let handle { curl_easy_cleanup(handle) }
        curl_slist_free_all(headers)
    }

    /// One RFC 7662 request, synchronously, bounded by the timeout. On `queue`.
    func introspect(token: [UInt8]) -> TokenVerdict {
        dispatchPrecondition(condition: .onQueue(queue))
        if handle == nil, let problem = open() { return .unavailable(reason: problem) }
        guard let handle else { return .unavailable(reason: "no libcurl handle") }
        answer.removeAll(keepingCapacity: true)
        answerTooLong = false
        defer { answer.removeAll(keepingCapacity: true) }

        let body = FormEncoding.introspectionBody(token: token)
        let rc = body.withUnsafeBytes { bytes in
            // libcurl does not copy CURLOPT_POSTFIELDS: the body lives for this call only, and
            // the handle must not keep pointing at it afterwards.
            _ = mailswitch_curl_setopt_long(handle, CURLOPT_POSTFIELDSIZE, bytes.count)
            _ = mailswitch_curl_setopt_pointer(handle, CURLOPT_POSTFIELDS, bytes.baseAddress)
            let rc = curl_easy_perform(handle)
            _ = mailswitch_curl_setopt_pointer(handle, CURLOPT_POSTFIELDS, nil)
            return rc
        }
        if answerTooLong {
            return .unavailable(reason: "introspection answer longer than \(Self.maxAnswerBytes) bytes")
        }
        // libcurl's error texts are fixed strings: none quotes the request body.
        guard rc == CURLE_OK else {
            return .unavailable(reason: "introspection request failed: \(String(cString: curl_easy_strerror(rc)))")
        }
        var status = 0
        _ = mailswitch_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        // Anything but 200, a redirect included, is no answer about the token (RFC 7662 §2.3:
        // an error is not "inactive").
        guard status == 200 else { return .unavailable(reason: "introspection endpoint answered HTTP \(status)") }
        return IntrospectionResponse.verdict(body: answer)
    }

    /// Makes and configures the handle; a reason when that fails.
    private func open() -> String? {
        guard LibCurl.isInitialised else { return "libcurl could not be initialised" }
        guard let handle = curl_easy_init() else { return "libcurl could not make a handle" }
        // libcurl copies the strings; the list is ours and lives as long as the handle.
        var list: UnsafeMutablePointer<curl_slist>?
        for header in ["Accept: application/json",
                       "Content-Type: application/x-www-form-urlencoded",
                       // A long token (a JWT) would otherwise make libcurl ask for a
                       // 100 Continue and wait up to a second for it.
                       "Expect:"] {
            list = curl_slist_append(list, header)
        }
        var failure: CURLcode = list == nil ? CURLE_OUT_OF_MEMORY : CURLE_OK
        func set(_ rc: CURLcode) { if failure == CURLE_OK { failure = rc } }
        set(mailswitch_curl_setopt_string(handle, CURLOPT_URL, endpoint.url))
        // Without it libcurl times name resolution out with SIGALRM, which a threaded process
        // cannot use.
        set(mailswitch_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1))
        // The token goes to the configured server and nowhere else: no other scheme, no
        // redirect followed, no proxy taken from the environment.
        set(mailswitch_curl_setopt_string(handle, CURLOPT_PROTOCOLS_STR, "http,https"))
        set(mailswitch_curl_setopt_long(handle, CURLOPT_FOLLOWLOCATION, 0))
        set(mailswitch_curl_setopt_string(handle, CURLOPT_PROXY, ""))
        set(mailswitch_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, endpoint.timeoutMilliseconds))
        set(mailswitch_curl_setopt_long(handle, CURLOPT_TIMEOUT_MS, endpoint.timeoutMilliseconds))
        set(mailswitch_curl_setopt_string(handle, CURLOPT_USERAGENT, "mailswitch"))
        set(mailswitch_curl_setopt_pointer(handle, CURLOPT_HTTPHEADER, list))
        if let user = endpoint.basicUser, let password = endpoint.basicPassword {
            // Basic is libcurl's default scheme, sent with the first request.
            set(mailswitch_curl_setopt_string(handle, CURLOPT_USERNAME, user))
            set(mailswitch_curl_setopt_string(handle, CURLOPT_PASSWORD, password))
        }
        set(mailswitch_curl_setopt_writefunction(handle) { data, size, count, context in
            let length = size * count
            guard let data, let context else { return 0 }
            let connection = Unmanaged<IntrospectionConnection>.fromOpaque(context).takeUnretainedValue()
            guard connection.answer.count + length <= IntrospectionConnection.maxAnswerBytes else {
                connection.answerTooLong = true
                return 0  // libcurl ends the transfer with CURLE_WRITE_ERROR
            }
            connection.answer.append(contentsOf: UnsafeRawBufferPointer(start: data, count: length))
            return length
        })
        // Unretained: the connection owns the handle, so it outlives every transfer.
        set(mailswitch_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, Unmanaged.passUnretained(self).toOpaque()))
        guard failure == CURLE_OK else {
            curl_easy_cleanup(handle)
            curl_slist_free_all(list)
            return "libcurl refused a setting: \(String(cString: curl_easy_strerror(failure)))"
        }
        self.handle = handle
        headers = list
        return nil
    }
}
