//! The one reader of `/proc` for the tests: which processes live, their
//! parents, names and command lines, as the kernel reports them from outside
//! any sandbox.

/// One process as `/proc/PID/stat` shows it.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    /// The state letter: `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    pub comm: String,
}

impl Proc {
    /// Neither a zombie nor dead.
    pub fn live(&self) -> bool {
        !matches!(self.state, 'Z' | 'X')
    }
}

/// `/proc/PID/stat` of one process, `None` when it is gone. The command name
/// may hold spaces and parentheses, so fields are read after its last `)`.
pub fn stat(pid: i32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let (head, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some(Proc {
        pid,
        ppid: fields.next()?.parse().ok()?,
        state,
        comm: head[open + 1..].to_string(),
    })
}

/// Whether `pid` exists and is neither a zombie nor dead.
pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|p| p.live())
}

/// Every process, zombies included.
pub fn all() -> Vec<Proc> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .collect()
}

/// Every live descendant of `pid`.
pub fn descendants(pid: i32) -> Vec<Proc> {
    let all = all();
    let mut found: Vec<Proc> = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for p in all.iter().filter(|p| p.ppid == parent && p.live()) {
            if !found.iter().any(|f| f.pid == p.pid) {
                frontier.push(p.pid);
                found.push(p.clone());
            }
        }
    }
    found
}

/// The command line of `pid`, arguments joined by spaces.
pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}
