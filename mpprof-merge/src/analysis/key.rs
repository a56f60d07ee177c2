//! How the analyses name a function: by label, file and line, so that the
//! same code in many processes adds up.

use crate::trace::Process;

/// A function (callsite) as the analyses group it: the same code in
/// several processes is one function of the tree.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FuncKey {
    /// Label: the full path for functions, the given name otherwise.
    pub label: String,
    /// Source file.
    pub file: String,
    /// Source line.
    pub line: u32,
}

impl FuncKey {
    /// `file:line(label)`, cProfile's location column.
    pub fn location(&self) -> String {
        if self.file.is_empty() {
            format!("~:0({})", self.label)
        } else {
            format!("{}:{}({})", self.file, self.line, self.label)
        }
    }
}

/// The key of a callsite of process `p`.
pub(crate) fn func_key(p: &Process, site: u32) -> FuncKey {
    match p.site(site) {
        Some(s) => {
            let label = if !s.path.is_empty() && s.path.ends_with(&s.name) {
                s.path.clone()
            } else {
                s.name.clone()
            };
            FuncKey {
                label,
                file: s.file.clone(),
                line: s.line,
            }
        }
        None => FuncKey {
            label: format!("#{site}"),
            file: String::new(),
            line: 0,
        },
    }
}
