//! Cutting text to a size (its head or its tail, counted in bytes or in
//! characters) and putting it on one line. Every cut lands on a character
//! boundary, so a cut never splits a multibyte character and never panics.
//! Pure; knows nothing of where the text comes from or where it goes.

/// The end of `text`: its last `max_bytes` bytes at most. When that would start
/// inside a multibyte character, the cut moves forward to the next character,
/// so the result can be up to three bytes shorter than `max_bytes`.
pub(crate) fn tail_bytes(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut start = text.len() - max_bytes;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// The beginning of `text`: its first `max_bytes` bytes at most. When that
/// would end inside a multibyte character, the cut moves back to the start of
/// that character, so the result can be up to three bytes shorter than
/// `max_bytes`.
pub(crate) fn head_bytes(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The beginning of `text`: its first `max_chars` characters at most.
pub(crate) fn head_chars(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// The end of `text`: its last `max_chars` characters at most.
pub(crate) fn tail_chars(text: &str, max_chars: usize) -> &str {
    let skip = text.chars().count().saturating_sub(max_chars);
    match text.char_indices().nth(skip) {
        Some((start, _)) => &text[start..],
        // Only when nothing is kept: `max_chars` is 0 or `text` is empty.
        None => "",
    }
}

/// `text` on one line: every run of whitespace (newlines too) becomes one
/// space, and the ends are trimmed.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The beginning of `text` for a message: its first `max_chars` characters,
/// followed by `…` when anything was cut (so the result can be one character
/// longer than `max_chars`).
pub(crate) fn head_chars_with_ellipsis(text: &str, max_chars: usize) -> String {
    let head = head_chars(text, max_chars);
    if head.len() == text.len() {
        return text.to_owned();
    }
    format!("{head}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pair of cuts: one keeping the head, one keeping the tail.
    type Cuts = [fn(&str, usize) -> &str; 2];
    const BYTES: Cuts = [head_bytes, tail_bytes];
    const CHARS: Cuts = [head_chars, tail_chars];

    #[track_caller]
    fn check([cut_head, cut_tail]: Cuts, text: &str, max: usize, head: &str, tail: &str) {
        assert_eq!(cut_head(text, max), head, "head of {text:?}");
        assert_eq!(cut_tail(text, max), tail, "tail of {text:?}");
    }

    #[test]
    fn byte_cuts_keep_their_end_and_land_on_char_boundaries() {
        // "é" is two bytes, "€" three: every cut inside one moves off it.
        check(BYTES, "", 0, "", "");
        check(BYTES, "", 5, "", "");
        check(BYTES, "abc", 0, "", "");
        check(BYTES, "abc", 3, "abc", "abc");
        check(BYTES, "abc", 10, "abc", "abc");
        check(BYTES, "abcd", 2, "ab", "cd");
        check(BYTES, "héllo", 4, "hél", "llo");
        check(BYTES, "héllo", 2, "h", "lo");
        check(BYTES, "héllo", 3, "hé", "llo");
        check(BYTES, "€uro€", 4, "€u", "o€");
        check(BYTES, "€", 2, "", "");
        check(BYTES, "€", 1, "", "");
    }

    #[test]
    fn char_cuts_count_characters_not_bytes() {
        check(CHARS, "", 0, "", "");
        check(CHARS, "", 3, "", "");
        check(CHARS, "abc", 0, "", "");
        check(CHARS, "abc", 3, "abc", "abc");
        check(CHARS, "abc", 5, "abc", "abc");
        check(CHARS, "héllo", 2, "hé", "lo");
        check(CHARS, "€uro€", 4, "€uro", "uro€");
        check(CHARS, "日本語テキスト", 3, "日本語", "キスト");
    }

    #[test]
    fn ellipsis_marks_only_a_real_cut() {
        assert_eq!(head_chars_with_ellipsis("", 0), "");
        assert_eq!(head_chars_with_ellipsis("abc", 3), "abc");
        assert_eq!(head_chars_with_ellipsis("abcd", 3), "abc…");
        assert_eq!(head_chars_with_ellipsis("ééé", 2), "éé…");
        assert_eq!(head_chars_with_ellipsis("abc", 0), "…");
    }
}
