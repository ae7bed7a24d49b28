//! Command templates: an operator's command line with `{uuid}`, `{name}` and `{action}` holes.
//!
//! A template is split into argv words once, when the backend is built, exactly as a shell
//! would split a simple command line: on whitespace, with `'…'` (everything literal) and
//! `"…"` (only `\"` and `\\` escaped) quoting. Only then are the placeholders filled in, inside
//! each word, in a single left-to-right pass. A value therefore always stays inside the word it
//! was put in, whatever it contains, and a value that itself looks like a placeholder is not
//! expanded again. Nothing here ever goes through a shell: the guest chooses its own name, and a
//! name such as `x; rm -rf /` must reach the command as one harmless argument.

use crate::Action;

/// The placeholders a template may use.
pub const PLACEHOLDERS: [&str; 3] = ["{uuid}", "{name}", "{action}"];

/// A template that cannot be split into words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// No words at all.
    #[error("The command template is empty")]
    Empty,
    /// A quote was opened and never closed.
    #[error("Unterminated {0} quote in the command template")]
    UnterminatedQuote(char),
    /// The program itself must be fixed by the operator, not chosen by a guest.
    #[error("The program (first word) must not contain a placeholder")]
    PlaceholderInProgram,
}

/// A command template split into argv words, placeholders still in them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    words: Vec<String>,
}

/// The values a template is filled in with.
#[derive(Debug, Clone, Copy)]
pub struct Values<'a> {
    /// Instance uuid.
    pub uuid: &'a str,
    /// Instance name, as the guest gave it (untrusted).
    pub name: &'a str,
    /// The action being carried out.
    pub action: Action,
}

impl Template {
    /// Splits `text` into words (whitespace, single and double quotes).
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let words = split_words(text)?;
        match words.first() {
            None => Err(TemplateError::Empty),
            Some(program) if PLACEHOLDERS.iter().any(|p| program.contains(p)) => {
                Err(TemplateError::PlaceholderInProgram)
            }
            Some(_) => Ok(Template { words }),
        }
    }

    /// The argv words as written, placeholders unexpanded.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The argv with every placeholder filled in; one output word per template word.
    pub fn render(&self, values: Values<'_>) -> Vec<String> {
        self.words.iter().map(|w| substitute(w, values)).collect()
    }
}

/// Splits a command line into words, honouring quotes. Quotes glue to adjacent text
/// (`a"b c"d` is the single word `ab cd`), and `''` makes an empty word.
fn split_words(text: &str) -> Result<Vec<String>, TemplateError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                read_single(&mut chars, &mut word)?;
            }
            '"' => {
                in_word = true;
                read_double(&mut chars, &mut word)?;
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

fn read_single(chars: &mut std::str::Chars<'_>, word: &mut String) -> Result<(), TemplateError> {
    for c in chars.by_ref() {
        if c == '\'' {
            return Ok(());
        }
        word.push(c);
    }
    Err(TemplateError::UnterminatedQuote('\''))
}

fn read_double(chars: &mut std::str::Chars<'_>, word: &mut String) -> Result<(), TemplateError> {
    while let Some(c) = chars.next() {
        match c {
            '"' => return Ok(()),
            '\\' => match chars.next() {
                Some(e @ ('"' | '\\')) => word.push(e),
                Some(other) => {
                    word.push('\\');
                    word.push(other);
                }
                None => break,
            },
            c => word.push(c),
        }
    }
    Err(TemplateError::UnterminatedQuote('"'))
}

/// Fills in the placeholders of one word in a single pass; unknown `{…}` stay as written.
fn substitute(word: &str, values: Values<'_>) -> String {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let tail = &rest[open..];
        let (value, len) = if tail.starts_with("{uuid}") {
            (values.uuid, "{uuid}".len())
        } else if tail.starts_with("{name}") {
            (values.name, "{name}".len())
        } else if tail.starts_with("{action}") {
            (values.action.as_str(), "{action}".len())
        } else {
            ("{", 1)
        };
        out.push_str(value);
        rest = &tail[len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(name: &str) -> Values<'_> {
        Values {
            uuid: "8c3f1f6e-2a41-4e0b-9a55-0d2a3b1c9e77",
            name,
            action: Action::Reboot,
        }
    }

    #[test]
    fn splits_on_whitespace_and_quotes() {
        let t = Template::parse(r#"  /bin/x  'a b'  "c \"d\" \\ \e" f'g h'"i"  '' "#);
        let words = t.map(|t| t.words().to_vec());
        assert_eq!(
            words,
            Ok(vec![
                "/bin/x".to_owned(),
                "a b".to_owned(),
                r#"c "d" \ \e"#.to_owned(),
                "fg hi".to_owned(),
                String::new(),
            ])
        );
    }

    #[test]
    fn refuses_bad_templates() {
        assert_eq!(Template::parse("   "), Err(TemplateError::Empty));
        assert_eq!(
            Template::parse("/bin/x 'open"),
            Err(TemplateError::UnterminatedQuote('\''))
        );
        assert_eq!(
            Template::parse("/bin/x \"open\\\""),
            Err(TemplateError::UnterminatedQuote('"'))
        );
        assert_eq!(
            Template::parse("/opt/{name}/bin"),
            Err(TemplateError::PlaceholderInProgram)
        );
    }

    #[test]
    fn substitutes_inside_words_once() {
        let t = Template::parse("/bin/r {action} --vm={uuid} 'n={name}' {other} {")
            .map_err(|e| e.to_string());
        let argv = t.map(|t| t.render(values("{action} ; rm -rf / 'x\"")));
        assert_eq!(
            argv,
            Ok(vec![
                "/bin/r".to_owned(),
                "reboot".to_owned(),
                "--vm=8c3f1f6e-2a41-4e0b-9a55-0d2a3b1c9e77".to_owned(),
                "n={action} ; rm -rf / 'x\"".to_owned(),
                "{other}".to_owned(),
                "{".to_owned(),
            ])
        );
    }

    #[test]
    fn an_empty_name_stays_one_word() {
        let t = Template::parse("/bin/r {name} end").map(|t| t.render(values("")));
        assert_eq!(t.map(|a| a.len()), Ok(3));
    }
}
