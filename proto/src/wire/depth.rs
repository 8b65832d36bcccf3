//! One limit on how deeply data may nest, the same for every path through a graph: a value
//! entering a graph (an IDF sample), and a value any function returns (Rhai or Python), may
//! nest arrays and objects at most [`MAX_DEPTH`] levels; beyond it the message is dropped
//! with [`DepthError`] on the graph's monitor topic. (The controller's own JSON handling,
//! the wrapping of values into function calls and replies included, stays well inside
//! serde_json's recursion limit of 128 with it.)

use serde_json::Value;

/// Most levels of arrays and objects in data routed through a graph: `[[1]]` has 2.
pub const MAX_DEPTH: usize = 64;

/// Data nested deeper than [`MAX_DEPTH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("data nested deeper than {MAX_DEPTH} levels")]
pub struct DepthError;

/// How many levels of arrays and objects `v` nests (a scalar: 0), without recursion.
pub fn json_depth(v: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(a) => Box::new(a.iter()),
            Value::Object(m) => Box::new(m.values()),
            _ => continue,
        };
        deepest = deepest.max(d + 1);
        stack.extend(children.map(|c| (c, d + 1)));
    }
    deepest
}

/// `Ok` when `v` nests at most [`MAX_DEPTH`] levels.
pub fn check_depth(v: &Value) -> Result<(), DepthError> {
    if json_depth(v) > MAX_DEPTH {
        Err(DepthError)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(n: usize) -> Value {
        (0..n).fold(json!(1), |v, _| json!([v]))
    }

    #[test]
    fn depth_counts_arrays_and_objects() {
        assert_eq!(json_depth(&json!(1)), 0);
        assert_eq!(json_depth(&json!([])), 1);
        assert_eq!(json_depth(&json!({"a": [1, {"b": 2}]})), 3);
        assert_eq!(json_depth(&nested(MAX_DEPTH)), MAX_DEPTH);
        assert!(check_depth(&nested(MAX_DEPTH)).is_ok());
        assert_eq!(check_depth(&nested(MAX_DEPTH + 1)), Err(DepthError));
        assert_eq!(
            DepthError.to_string(),
            format!("data nested deeper than {MAX_DEPTH} levels")
        );
    }
}
