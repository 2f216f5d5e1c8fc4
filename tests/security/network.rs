//! Network and local IPC: TCP and UDP without `network.outbound`, port rules, unix sockets by path and abstract name, socketpair datagrams.

use super::*;

/// TCP to a loopback listener without network.outbound (empty net namespace,
/// socket() denied); control: with network.outbound it connects.
#[test]
fn attack_net_tcp_without_capability() {
    confined(FULL, |who| {
        let trap = Trap::tcp();
        let code = snippet(
            r#"
result = {"tcp": raw_connect(2, 1, ("127.0.0.1", @P@)), "inet6": ename(sys_call(41, 10, 1, 0)),
          "packet": ename(sys_call(41, 17, 3, 0))}
"#,
            &[("P", trap.port.to_string())],
        );
        let (r, _) = run_once(Launch::new(who, &[]), &code);
        std::thread::sleep(ms(200));
        assert_eq!(trap.hits(), 0, "connection reached the listener: {r:?}");
        assert_eq!(r.field("tcp"), "socket:EPERM", "{r:?}");
        assert_eq!(r.field("inet6"), "EPERM", "{r:?}");
        let (r2, _) = run_once(Launch::new(who, &["network.outbound"]), &code);
        assert!(
            trap.hits_after(ms(1000)) >= 1,
            "control: network.outbound could not connect: {r2:?}"
        );
    });
}

/// UDP to a loopback socket without network.outbound; control: with it, it arrives.
#[test]
fn attack_net_udp_without_capability() {
    confined(FULL, |who| {
        let trap = Trap::udp();
        let code = snippet(
            r#"
fd = sys_call(41, 2, 2, 0)
result = {"udp": raw_sendto(fd, 2, ("127.0.0.1", @P@)) if fd >= 0 else "socket:" + ename(fd)}
"#,
            &[("P", trap.port.to_string())],
        );
        let (r, _) = run_once(Launch::new(who, &[]), &code);
        std::thread::sleep(ms(200));
        assert_eq!(trap.hits(), 0, "datagram arrived: {r:?}");
        let (r2, _) = run_once(Launch::new(who, &["network.outbound"]), &code);
        assert!(
            trap.hits_after(ms(1000)) >= 1,
            "control: UDP with network.outbound: {r2:?}"
        );
    });
}

/// A unix stream socket by path (think docker.sock), with and without network.outbound.
#[test]
fn attack_net_unix_socket_by_path() {
    confined(FULL, |who| {
        let d = world_dir("sock");
        let trap = Trap::unix_stream(&d.join("docker.sock"));
        let code = snippet(
            r#"
result = {"connect": raw_connect(1, 1, @S@, b"GET /")}
"#,
            &[("S", lit(&trap.name))],
        );
        assert_control(
            &plain(who, &code),
            "connected",
            "plain connect to the socket",
        );
        assert!(trap.hits_after(ms(1000)) >= 1);
        let before = trap.hits();
        for caps in [&[][..], &["network.outbound"][..]] {
            let (r, _) = run_once(Launch::new(who, caps), &code);
            std::thread::sleep(ms(150));
            assert_eq!(
                trap.hits(),
                before,
                "{caps:?}: connected to the unix socket: {r:?}"
            );
            assert_eq!(r.field("connect"), "socket:EPERM", "{r:?}");
        }
    });
}

/// GAP: a unix *datagram* socket by path is reachable through socketpair():
/// seccomp only filters socket(), and a datagram socket from socketpair may
/// sendto() any path (syslog's /dev/log, journald, notify sockets...).
#[test]
fn net_unix_dgram_by_path_via_socketpair() {
    confined(FULL, |who| {
        let d = world_dir("sock");
        let trap = Trap::unix_dgram(&d.join("log.sock"));
        let code = snippet(
            r#"
import socket
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
result = attempt(lambda: a.sendto(b"injected", @S@))
"#,
            &[("S", lit(&trap.name))],
        );
        for caps in [&[][..], &["network.outbound"][..]] {
            let (r, _) = run_once(Launch::new(who, caps), &code);
            std::thread::sleep(ms(200));
            assert_eq!(
                trap.hits(),
                0,
                "{caps:?}: a datagram reached the host socket: {r:?}"
            );
        }
    });
}

/// Abstract unix sockets (stream and datagram), with and without network.outbound:
/// the net namespace hides them, and Landlock's abstract-socket scope stops
/// them when there is no net namespace.
#[test]
fn attack_net_abstract_unix_socket() {
    confined(FULL, |who| {
        let sname = token("nodus-sec-abs");
        let dname = token("nodus-sec-absd");
        let st = Trap::abstract_stream(&sname);
        let dt = Trap::abstract_dgram(&dname);
        let code = snippet(
            r#"
import socket
def stream():
    return raw_connect(1, 1, "\0" + @S@)
def pair_dgram():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM); return a.sendto(b"x", "\0" + @D@)
result = {"stream": attempt(stream), "dgram": attempt(pair_dgram)}
"#,
            &[("S", lit(&sname)), ("D", lit(&dname))],
        );
        let base = plain(who, &code);
        assert!(
            st.hits_after(ms(1000)) >= 1 && dt.hits_after(ms(1000)) >= 1,
            "control: plain abstract connect: {base}"
        );
        let (s0, d0) = (st.hits(), dt.hits());
        for caps in [&[][..], &["network.outbound"][..]] {
            let (r, _) = run_once(Launch::new(who, caps), &code);
            std::thread::sleep(ms(150));
            assert_eq!(
                (st.hits(), dt.hits()),
                (s0, d0),
                "{caps:?}: abstract socket reached: {r:?}"
            );
        }
    });
}

/// netlink: without network.outbound socket() is denied; with it, NETLINK_ROUTE
/// may read but not change the host's addresses (no CAP_NET_ADMIN).
#[test]
fn attack_net_netlink_route_change() {
    confined(FULL, |who| {
        // One address per identity: both run at once.
        let last = if who == Who::Root { 99 } else { 98 };
        let code = &snippet(
            r#"
import socket, struct
def add_addr():
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    s.bind((0, 0))
    ifa = struct.pack("=BBBBI", 2, 8, 0, 254, 1)   # AF_INET /8, scope host, lo
    ip = bytes([127, 0, 0, @LAST@])
    attrs = struct.pack("=HH", 8, 2) + ip + struct.pack("=HH", 8, 1) + ip
    body = ifa + attrs
    hdr = struct.pack("=IHHII", 16 + len(body), 20, 1 | 4 | 0x400 | 0x200, 1, 0)
    s.send(hdr + body)
    ack = s.recv(4096)
    return ename(struct.unpack("=i", ack[16:20])[0])
result = {"newaddr": attempt(add_addr)}
"#,
            &[("LAST", last.to_string())],
        );
        let addr = format!("127.0.0.{last}");
        let has_addr = || {
            std::process::Command::new("ip")
                .args(["-4", "addr", "show", "dev", "lo"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{addr}/")))
                .unwrap_or(false)
        };
        assert!(!has_addr(), "{addr} already on lo");
        let (r, _) = run_once(Launch::new(who, &[]), code);
        assert_eq!(r.field("newaddr"), "EPERM", "{r:?}");
        let (r2, _) = run_once(Launch::new(who, &["network.outbound"]), code);
        assert!(
            !has_addr(),
            "the worker added an address to the host's lo: {r2:?}"
        );
        assert!(r2.field("newaddr").contains("EPERM"), "{r2:?}");
        if who == Who::Root {
            // Control: outside the sandbox root can add it (then it is removed).
            let base = plain(who, code);
            let added = has_addr();
            let _ = std::process::Command::new("ip")
                .args(["addr", "del", &format!("{addr}/8"), "dev", "lo"])
                .status();
            assert!(added, "control: plain netlink add failed: {base}");
        }
    });
}

/// The operator's tcp_ports: the allowed port connects, another gets nothing;
/// bind/listen is denied either way.
#[test]
fn attack_net_tcp_ports_allowlist_and_bind() {
    confined(FULL, |who| {
        let allowed = Trap::tcp();
        let other = Trap::tcp();
        let free = free_port();
        let code = snippet(
            r#"
import socket
def conn(p):
    s = socket.create_connection(("127.0.0.1", p), timeout=2); s.sendall(b"hi"); return s.recv(100)
def listen():
    s = socket.socket(); s.bind(("127.0.0.1", @F@)); s.listen(); return "listening"
result = {"allowed": attempt(lambda: conn(@A@)), "other": attempt(lambda: conn(@O@)), "listen": attempt(listen)}
"#,
            &[
                ("A", allowed.port.to_string()),
                ("O", other.port.to_string()),
                ("F", free.to_string()),
            ],
        );
        let mut s = Launch::new(who, &["network.outbound"])
            .policy(json!({"tcp_ports": [allowed.port]}))
            .start();
        let r = s.exec(&code);
        let reached = std::net::TcpStream::connect(("127.0.0.1", free)).is_ok();
        s.finish();
        assert!(
            allowed.hits_after(ms(1000)) >= 1,
            "control: the allowed port got nothing: {r:?}"
        );
        assert!(r.field("allowed").contains("ECHO:hi"), "{r:?}");
        assert_eq!(other.hits(), 0, "the other port was reached: {r:?}");
        assert!(!reached, "the worker listens on 127.0.0.1:{free}: {r:?}");
        assert_eq!(r.field("listen"), "EACCES", "{r:?}");
    });
}
