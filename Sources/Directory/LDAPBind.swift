#if canImport(Glibc)
import Glibc
#endif
import CLDAP
import CLDAPShims
import Configuration
import Routing

/// Opens and binds libldap handles, the same way for lookups and for the change feed.
enum LDAPBind {
    struct Failure: Error, CustomStringConvertible {
        let description: String
        /// False when the server answered and refused the credentials: it is up, and the
        /// configuration is wrong (see `LDAPServerHealth`).
        var serverFault = true
    }

    /// A handle connected to its server, with a bind request on its way.
    struct SentBind: Sendable {
        let handle: LDAPHandle
        let messageID: Int32
    }

    /// Result codes that mean "the credentials", not "the server".
    static func isCredentialProblem(_ code: Int32) -> Bool {
        code == LDAP_INVALID_CREDENTIALS || code == LDAP_INAPPROPRIATE_AUTH
    }

    static func text(_ code: Int32) -> String { String(cString: ldap_err2string(code)) }

    /// A handle for `uri` with the options every connection uses; nothing is connected yet.
    static func handle(uri: String, configuration: DirectoryConfiguration) -> Result<OpaquePointer, Failure> {
        let seconds = Int(configuration.timeoutSeconds)
        let micros = Int((configuration.timeoutSeconds - Double(seconds)) * 1_000_000)
        var ld: OpaquePointer?
        guard ldap_initialize(&ld, uri) == LDAP_SUCCESS, let ld else {
            return .failure(Failure(description: "invalid URI"))
        }
        mailswitch_ldap_set_int(ld, LDAP_OPT_PROTOCOL_VERSION, LDAP_VERSION3)
        mailswitch_ldap_set_off(ld, LDAP_OPT_REFERRALS)
        mailswitch_ldap_set_timeout(ld, LDAP_OPT_NETWORK_TIMEOUT, seconds, micros)
        mailswitch_ldap_set_timeout(ld, LDAP_OPT_TIMEOUT, seconds, micros)
        return .success(ld)
    }

    /// Connects and binds, blocking the calling thread (the change feed's own, never an event
    /// loop or the lookup queue) for at most the network timeout plus the operation timeout.
    static func open(uri: String, configuration: DirectoryConfiguration) -> Result<OpaquePointer, Failure> {
        let ld: OpaquePointer
        switch handle(uri: uri, configuration: configuration) {
        case .failure(let failure): return .failure(failure)
        case .success(let handle): ld = handle
        }
        let password = configuration.bindPassword ?? ""
        let rc = password.withCString { pw in
            mailswitch_ldap_simple_bind_s(ld, configuration.bindDN, pw, strlen(pw))
        }
        guard rc == LDAP_SUCCESS else {
            ldap_unbind_ext(ld, nil, nil)
            return .failure(Failure(description: "bind failed: \(text(rc))", serverFault: !isCredentialProblem(rc)))
        }
        return .success(ld)
    }

    /// Connects, then sends the bind without waiting for its answer: the caller collects it
    /// with `ldap_result` when the descriptor becomes readable. The connect blocks the calling
    /// thread for at most the network timeout: libldap resolves the name, connects and (for
    /// ldaps://) shakes hands synchronously; `LDAP_OPT_CONNECT_ASYNC` would only spare the TCP
    /// connect, so the lookup connection calls this from a queue of its own instead.
    static func sendBind(uri: String, configuration: DirectoryConfiguration) -> Result<SentBind, Failure> {
        let ld: OpaquePointer
        switch handle(uri: uri, configuration: configuration) {
        case .failure(let failure): return .failure(failure)
        case .success(let handle): ld = handle
        }
        // libldap's berval wants a mutable buffer; the copy lives until the request is encoded.
        let password = strdup(configuration.bindPassword ?? "")
        defer { free(password) }
        var credentials = berval(bv_len: ber_len_t(strlen(password!)), bv_val: password)
        var messageID: Int32 = 0
        // The mechanism nil is LDAP_SASL_SIMPLE.
        let rc = ldap_sasl_bind(ld, configuration.bindDN, nil, &credentials, nil, nil, &messageID)
        guard rc == LDAP_SUCCESS else {
            ldap_unbind_ext(ld, nil, nil)
            return .failure(Failure(description: text(rc)))
        }
        return .success(SentBind(handle: LDAPHandle(ld), messageID: messageID))
    }

    /// The values of `attribute` in an entry, as text.
    static func values(_ handle: OpaquePointer, _ entry: OpaquePointer, _ attribute: String) -> [String] {
        guard let values = ldap_get_values_len(handle, entry, attribute) else { return [] }
        defer { ldap_value_free_len(values) }
        var result: [String] = []
        var index = 0
        while let value = values[index] {
            let bytes = UnsafeRawBufferPointer(start: value.pointee.bv_val, count: Int(value.pointee.bv_len))
            result.append(String(decoding: bytes, as: UTF8.self))
            index += 1
        }
        return result
    }

    /// The first value of each attribute that has one, keyed by its name in lower case.
    static func firstValues(_ handle: OpaquePointer, _ entry: OpaquePointer, _ attributes: [String]) -> [String: String] {
        var result: [String: String] = [:]
        for name in attributes {
            if let value = values(handle, entry, name).first { result[name.lowercased()] = value }
        }
        return result
    }

    static func dn(_ handle: OpaquePointer, _ entry: OpaquePointer) -> String {
        guard let raw = ldap_get_dn(handle, entry) else { return "" }
        defer { ldap_memfree(raw) }
        return String(cString: raw)
    }
}

/// A libldap handle that changes hands once (from a connect queue to the directory's queue)
/// and is unbound once.
///
/// `@unchecked Sendable`: the connect queue creates it and never touches it after handing it
/// over; from then on it is used and released on the directory's queue only.
final class LDAPHandle: @unchecked Sendable {
    let pointer: OpaquePointer
    private var released = false

    init(_ pointer: OpaquePointer) { self.pointer = pointer }

    /// Unbinds (which closes the descriptor): call it only once no read source watches it.
    func release() {
        guard !released else { return }
        released = true
        ldap_unbind_ext(pointer, nil, nil)
    }
}
