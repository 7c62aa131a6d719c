//! Page selections: `1-3,7,10-` (1-based, inclusive, an open end runs to the
//! last page). Parsed in the request handler (syntax errors are the
//! caller's: 400); resolved against the page count in the renderer (pages
//! the document lacks: 422).

/// Inclusive ranges; `None` as the end means "to the last page".
pub type PageRanges = Vec<(u32, Option<u32>)>;

/// Parses a selection; the error says what is wrong with it.
pub fn parse(spec: &str) -> Result<PageRanges, String> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err("pages is empty; expected e.g. \"1-3,7\"".into());
    }
    spec.split(',')
        .map(|part| {
            let part = part.trim();
            let number = |s: &str| -> Result<u32, String> {
                match s.trim().parse::<u32>() {
                    Ok(0) => Err(format!("page numbers start at 1, got {part:?}")),
                    Ok(n) => Ok(n),
                    Err(_) => Err(format!("{part:?} is not a page or a range like 2-5")),
                }
            };
            match part.split_once('-') {
                None => number(part).map(|n| (n, Some(n))),
                Some((a, b)) if b.trim().is_empty() => number(a).map(|a| (a, None)),
                Some((a, b)) => {
                    let (a, b) = (number(a)?, number(b)?);
                    if a > b {
                        Err(format!("range {part:?} runs backwards"))
                    } else {
                        Ok((a, Some(b)))
                    }
                }
            }
        })
        .collect()
}

/// The sorted, de-duplicated page numbers `ranges` select in a document of
/// `page_count` pages, or an error naming a page it lacks.
pub fn resolve(ranges: Option<&[(u32, Option<u32>)]>, page_count: u32) -> Result<Vec<u32>, String> {
    let Some(ranges) = ranges else {
        return Ok((1..=page_count).collect());
    };
    let mut pages = Vec::new();
    for &(start, end) in ranges {
        let end = end.unwrap_or(page_count);
        if start > page_count || end > page_count {
            return Err(format!(
                "page {} is beyond the document's {page_count} pages",
                end.max(start)
            ));
        }
        pages.extend(start..=end);
    }
    pages.sort_unstable();
    pages.dedup();
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_pages_ranges_and_open_ends_parse() {
        assert_eq!(
            parse("1-3, 7,10-").unwrap(),
            vec![(1, Some(3)), (7, Some(7)), (10, None)]
        );
    }

    #[test]
    fn malformed_selections_are_refused_with_a_reason() {
        for bad in ["", "0", "a", "3-1", "1-2-3", "-4", "1,,2", "99999999999"] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn resolving_sorts_dedups_and_refuses_pages_beyond_the_end() {
        let ranges = parse("5-,2,1-3").unwrap();
        assert_eq!(resolve(Some(&ranges), 6).unwrap(), vec![1, 2, 3, 5, 6]);
        assert_eq!(resolve(None, 3).unwrap(), vec![1, 2, 3]);
        let err = resolve(Some(&parse("2-9").unwrap()), 4).unwrap_err();
        assert!(err.contains("9"), "{err}");
    }
}

#[cfg(test)]
mod properties {
    //! Property tests: the parser never panics, and what it accepts means
    //! what it says.

    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_text_parses_or_is_refused_without_panicking(spec in "\\PC{0,40}") {
            let _ = parse(&spec);
        }

        #[test]
        fn near_valid_text_never_panics(spec in "[0-9,\\- ]{0,30}") {
            if let Ok(ranges) = parse(&spec) {
                for (start, end) in &ranges {
                    prop_assert!(*start >= 1);
                    if let Some(end) = end {
                        prop_assert!(start <= end);
                    }
                }
            }
        }

        #[test]
        fn written_ranges_round_trip_and_resolve_inside_the_document(
            ranges in proptest::collection::vec((1u32..60, 0u32..10, any::<bool>()), 1..6),
            page_count in 1u32..80,
        ) {
            let spec: Vec<String> = ranges
                .iter()
                .map(|(start, len, open)| match (len, open) {
                    (_, true) => format!("{start}-"),
                    (0, false) => format!("{start}"),
                    (len, false) => format!("{start}-{}", start + len),
                })
                .collect();
            let parsed = parse(&spec.join(",")).expect("well-formed ranges parse");
            prop_assert_eq!(parsed.len(), ranges.len());
            match resolve(Some(&parsed), page_count) {
                Ok(pages) => {
                    prop_assert!(pages.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
                    prop_assert!(pages.iter().all(|&p| (1..=page_count).contains(&p)));
                }
                Err(_) => prop_assert!(parsed.iter().any(|(s, e)| *s > page_count || e.is_some_and(|e| e > page_count))),
            }
        }
    }
}
