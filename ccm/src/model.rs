//! The CCM's data: device features and models, the function library, projects with their
//! device objects and network applications (joins). These are the stored documents and the
//! bodies of the REST API; every check of a value a user sends is here ([`validate_name`],
//! [`Feature::check`], ...), so the API and an import refuse the same things.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use iot_proto::wire::graph_api::InputType;
use iot_proto::DaId;

use crate::error::CcmError;

/// Longest name of a feature, model, function, project or network application.
pub const MAX_NAME: usize = 64;
/// Most parameters (values per message) of one feature.
pub const MAX_PARAMS: usize = 64;
/// Largest function code, in bytes.
pub const MAX_CODE_BYTES: usize = 256 * 1024;
/// Longest comment, unit or author, in characters (what JSON Schema's `maxLength` counts).
pub const MAX_TEXT: usize = 1024;

/// Whether a feature produces data (input: a sensor) or consumes it (output: an actuator).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum FeatureDirection {
    Input,
    Output,
}

/// One value of a feature's message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Param {
    /// `int`, `float`, `bool`, `string` or `json`.
    #[serde(rename = "type")]
    #[schema(pattern = "^(int|float|bool|string|json)?$")]
    pub kind: String,
    #[schema(value_type = Text)]
    pub unit: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// The pattern of [`validate_name`] (letters and digits of any script, `-`, `_`, `.`, inner
/// spaces), as an ECMA-262 regular expression for the OpenAPI document. `\p{L}` is a little
/// narrower than `char::is_alphanumeric` (which also takes the marks of the Alphabetic
/// property): a name the pattern accepts is always accepted.
pub const NAME_PATTERN: &str = r"^[\p{L}\p{N}_.-]([\p{L}\p{N} _.-]*[\p{L}\p{N}_.-])?$";

/// Serde helper for the whole numbers of request bodies (ids, versions): JSON Schema's
/// `integer`, which the OpenAPI document says, includes numbers written with a zero fraction
/// (`3.0`), so they are read as well; a fraction, a negative number or one out of range is
/// refused.
pub fn whole<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    use serde::de::{Error, Unexpected, Visitor};
    struct Whole<T>(std::marker::PhantomData<T>);
    impl<T: TryFrom<u64>> Visitor<'_> for Whole<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "a whole number from 0 to 2^{} - 1",
                std::mem::size_of::<T>() * 8
            )
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<T, E> {
            T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<T, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
            }
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<T, E> {
            // 2^64: every whole f64 below it fits a u64 exactly.
            if v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                self.visit_u64(v as u64)
            } else {
                Err(E::invalid_value(Unexpected::Float(v), &self))
            }
        }
    }
    d.deserialize_any(Whole(std::marker::PhantomData))
}

/// A string schema for the OpenAPI document.
fn string_schema(
    min: usize,
    max: usize,
    pattern: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .min_length(Some(min))
        .max_length(Some(max))
        .pattern(Some(pattern))
        .into()
}

/// A name (of a feature, model, function, project or network application) in the OpenAPI
/// document: a string of 1 to [`MAX_NAME`] characters matching [`NAME_PATTERN`].
#[derive(Debug)]
pub struct Name;

impl utoipa::PartialSchema for Name {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(1, MAX_NAME, NAME_PATTERN)
    }
}

impl ToSchema for Name {}

/// A name that a body may leave empty (the path names it): `""` or a [`Name`].
#[derive(Debug)]
pub struct NameOrEmpty;

impl utoipa::PartialSchema for NameOrEmpty {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let inner = NAME_PATTERN.trim_start_matches('^').trim_end_matches('$');
        string_schema(0, MAX_NAME, &format!("^({inner})?$"))
    }
}

impl ToSchema for NameOrEmpty {}

/// A comment or a unit: at most [`MAX_TEXT`] characters, no control characters but tab and
/// newline.
#[derive(Debug)]
pub struct Text;

impl utoipa::PartialSchema for Text {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(0, MAX_TEXT, "^[^\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]*$")
    }
}

impl ToSchema for Text {}

/// How an input link feeds a value to its function ([`InputType`]), for the OpenAPI document.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputTypeName {
    /// The value as sent.
    Sample,
    /// The difference from the previous value of the same input.
    Variant,
}

/// A device feature: `Temperature-I`, `Switch-O`, ...
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    /// May be left out of a `PUT /api/features/{name}` body.
    #[serde(default)]
    #[schema(value_type = NameOrEmpty)]
    pub name: String,
    pub direction: FeatureDirection,
    /// One entry per value of a message (the feature's width).
    #[schema(min_items = 1, max_items = 64)]
    pub params: Vec<Param>,
    #[serde(default)]
    #[schema(value_type = Text)]
    pub comment: String,
}

/// A device model: a kind of device and the features it has. A DA is of model `M` when it
/// registers with `profile.model = M`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// May be left out of a `PUT /api/models/{name}` body.
    #[serde(default)]
    #[schema(value_type = NameOrEmpty)]
    pub name: String,
    /// Names of features of the library.
    /// Listed once each.
    #[schema(min_items = 1, value_type = Vec<Name>)]
    pub features: Vec<String>,
    #[serde(default)]
    #[schema(value_type = Text)]
    pub comment: String,
}

/// One version of a function of the library.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FunctionVersion {
    /// 1, 2, ...
    #[serde(deserialize_with = "whole")]
    pub version: u32,
    pub code: String,
    /// `sha256(code)` in lowercase hex: the function's identity in the CSM.
    pub digest: String,
    pub author: String,
    /// Unix seconds.
    pub created: f64,
}

/// A named function of the library, with all its versions (oldest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Function {
    #[schema(value_type = Name)]
    pub name: String,
    /// `python` or `rhai`, told from the latest version's code.
    pub lang: String,
    pub versions: Vec<FunctionVersion>,
}

/// A function version used by a link or a join.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FuncRef {
    #[schema(value_type = Name)]
    pub name: String,
    #[serde(deserialize_with = "whole")]
    pub version: u32,
}

/// A device model placed in a project, bound to one registered DA or not yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceObject {
    /// Unique in its project.
    #[serde(deserialize_with = "whole")]
    pub id: u32,
    #[schema(value_type = Name)]
    pub model: String,
    /// The DA it stands for; `null` until bound.
    #[schema(value_type = Option<String>, format = "uuid")]
    pub da_id: Option<DaId>,
}

/// Per-value range of a link (where the feature defines min/max): values are clamped into
/// `[min, max]` after the link's function, and mapped onto `[0, 1]` when `normalize` is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LinkParam {
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub normalize: bool,
}

/// One feature of one device object joined to a network application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// Unique in its network application.
    #[serde(deserialize_with = "whole")]
    pub id: u32,
    /// A device object of the project.
    #[serde(deserialize_with = "whole")]
    pub object: u32,
    /// A feature of that object's model; its direction says whether the link feeds the join
    /// (input) or is fed by it (output).
    #[schema(value_type = Name)]
    pub feature: String,
    /// The link's function (IDF or ODF function); `null` = values pass unchanged.
    #[serde(default)]
    pub func: Option<FuncRef>,
    /// Input links only: `sample` or `variant` per value (empty = all `sample`).
    #[serde(default)]
    #[schema(value_type = Vec<InputTypeName>)]
    pub input_type: Vec<InputType>,
    /// Per value: range and normalization (empty = none).
    #[serde(default)]
    pub params: Vec<LinkParam>,
}

/// A network application: one join, with the input features feeding it and the output
/// features it feeds. One CSM graph each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetApp {
    /// Unique in its project.
    #[serde(deserialize_with = "whole")]
    pub id: u32,
    #[schema(value_type = Name)]
    pub name: String,
    /// The join function; `null` = one input passes through, several make a list.
    #[serde(default)]
    pub join: Option<FuncRef>,
    #[serde(default)]
    pub links: Vec<Link>,
}

/// A project: device objects and network applications, applied to the CSM while on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Project {
    #[serde(deserialize_with = "whole")]
    pub id: u32,
    #[schema(value_type = Name)]
    pub name: String,
    #[serde(default)]
    pub on: bool,
    /// Bind an unbound device object automatically when exactly one online DA of its model
    /// is bound nowhere in this project (IoTtalk's behaviour).
    #[serde(default = "yes")]
    pub auto_bind: bool,
    #[serde(default)]
    pub objects: Vec<DeviceObject>,
    #[serde(default)]
    pub netapps: Vec<NetApp>,
    /// Incremented on every change (an `If-Match`-style check for editors).
    #[serde(default, deserialize_with = "whole")]
    pub rev: u64,
}

fn yes() -> bool {
    true
}

/// A project as exported: the project and every model, feature and function version it uses,
/// so that importing it on another controller needs nothing else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectExport {
    /// Always `"iotctl-ccm-project/1"`.
    #[schema(pattern = "^iotctl-ccm-project/1$")]
    pub format: String,
    pub project: Project,
    pub models: Vec<Model>,
    pub features: Vec<Feature>,
    /// Only the versions the project uses.
    pub functions: Vec<Function>,
}

pub const EXPORT_FORMAT: &str = "iotctl-ccm-project/1";

/// Names: 1 to 64 characters, letters, digits, `-`, `_`, `.`, and inner spaces; no control
/// characters, no `/` (names are path segments of the API).
pub fn validate_name(what: &'static str, name: &str) -> Result<(), CcmError> {
    let bad = |why: &str| CcmError::invalid(format!("{what} name `{}`: {why}", shorten(name)));
    if name.is_empty() {
        return Err(bad("must not be empty"));
    }
    if name.chars().count() > MAX_NAME {
        return Err(bad("longer than 64 characters"));
    }
    if name.trim() != name {
        return Err(bad("starts or ends with a space"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ' ')))
    {
        return Err(bad(&format!(
            "`{}` is not allowed (letters, digits, `-`, `_`, `.` and spaces)",
            c.escape_debug()
        )));
    }
    Ok(())
}

/// A name or text cut to 64 characters for an error message.
pub fn shorten(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(64)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

fn validate_text(what: &'static str, text: &str) -> Result<(), CcmError> {
    if text.chars().count() > MAX_TEXT {
        return Err(CcmError::invalid(format!(
            "{what} is longer than {MAX_TEXT} characters"
        )));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(CcmError::invalid(format!(
            "{what} contains control characters"
        )));
    }
    Ok(())
}

const PARAM_KINDS: [&str; 5] = ["int", "float", "bool", "string", "json"];

impl Feature {
    pub fn check(&self) -> Result<(), CcmError> {
        validate_name("feature", &self.name)?;
        validate_text("comment", &self.comment)?;
        if self.params.is_empty() || self.params.len() > MAX_PARAMS {
            return Err(CcmError::invalid(format!(
                "feature `{}` must have 1 to {MAX_PARAMS} params, not {}",
                self.name,
                self.params.len()
            )));
        }
        for (i, p) in self.params.iter().enumerate() {
            if !p.kind.is_empty() && !PARAM_KINDS.contains(&p.kind.as_str()) {
                return Err(CcmError::invalid(format!(
                    "feature `{}` param #{i}: type `{}` is not one of {}",
                    self.name,
                    shorten(&p.kind),
                    PARAM_KINDS.join(", ")
                )));
            }
            validate_text("unit", &p.unit)?;
            check_range(&format!("feature `{}` param #{i}", self.name), p.min, p.max)?;
        }
        Ok(())
    }
}

fn check_range(what: &str, min: Option<f64>, max: Option<f64>) -> Result<(), CcmError> {
    if min.is_some_and(|v| !v.is_finite()) || max.is_some_and(|v| !v.is_finite()) {
        return Err(CcmError::invalid(format!(
            "{what}: min and max must be finite numbers"
        )));
    }
    if let (Some(lo), Some(hi)) = (min, max) {
        if lo >= hi {
            return Err(CcmError::invalid(format!(
                "{what}: min {lo} must be less than max {hi}"
            )));
        }
    }
    Ok(())
}

impl Model {
    pub fn check(&self) -> Result<(), CcmError> {
        validate_name("model", &self.name)?;
        validate_text("comment", &self.comment)?;
        if self.features.is_empty() {
            return Err(CcmError::invalid(format!(
                "model `{}` has no features",
                self.name
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &self.features {
            validate_name("feature", f)?;
            if !seen.insert(f) {
                return Err(CcmError::invalid(format!(
                    "model `{}` lists feature `{f}` twice",
                    self.name
                )));
            }
        }
        Ok(())
    }
}

impl LinkParam {
    pub fn check(&self, what: &str) -> Result<(), CcmError> {
        check_range(what, self.min, self.max)?;
        if self.normalize && (self.min.is_none() || self.max.is_none()) {
            return Err(CcmError::invalid(format!(
                "{what}: normalization needs both min and max"
            )));
        }
        Ok(())
    }

    /// Whether this setting changes values at all.
    pub fn is_active(&self) -> bool {
        self.min.is_some() || self.max.is_some()
    }
}

/// The language of `code`, as the CSM tells it: `rhai` for a line `fn run(`, `python` for
/// `def run(`.
pub fn lang_of(code: &str) -> Option<&'static str> {
    for line in code.lines() {
        let t = line.trim_start();
        let rest = |p: &str| {
            t.strip_prefix(p).map(|r| {
                r.trim_start().starts_with("run")
                    && r.trim_start()[3..].trim_start().starts_with('(')
            })
        };
        if rest("fn ") == Some(true) {
            return Some("rhai");
        }
        if rest("def ") == Some(true) {
            return Some("python");
        }
    }
    None
}

/// Checks a function's code before it is stored: size, language, no NUL.
pub fn check_code(code: &str) -> Result<&'static str, CcmError> {
    if code.len() > MAX_CODE_BYTES {
        return Err(CcmError::invalid(format!(
            "code is {} bytes, more than {MAX_CODE_BYTES}",
            code.len()
        )));
    }
    if code.contains('\0') {
        return Err(CcmError::invalid("code contains a NUL character"));
    }
    lang_of(code).ok_or_else(|| {
        CcmError::invalid(
            "cannot tell the language: define `fn run(...)` (Rhai) or `def run(...):` (Python)",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("model", "Dummy_Sensor").is_ok());
        assert!(validate_name("model", "Bulb v2.1").is_ok());
        // Letters and digits of any script (the fuzz script generates ASCII only).
        for ok in ["溫度計", "Sensör-٣", "हिंदी"] {
            assert!(validate_name("model", ok).is_ok(), "{ok:?}");
        }
        for bad in ["a€", "🙂", "a\u{3000}b"] {
            assert!(validate_name("model", bad).is_err(), "{bad:?}");
        }
        for bad in ["", " x", "x ", "a/b", "a\nb", &"x".repeat(65)] {
            assert!(validate_name("model", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn whole_numbers() {
        #[derive(Debug, Deserialize)]
        struct W {
            #[serde(deserialize_with = "whole")]
            n: u32,
        }
        let read = |j: &str| serde_json::from_str::<W>(j).map(|w| w.n);
        assert_eq!(read(r#"{"n": 3}"#).ok(), Some(3));
        assert_eq!(read(r#"{"n": 3.0}"#).ok(), Some(3));
        assert_eq!(read(r#"{"n": 4294967295.0}"#).ok(), Some(u32::MAX));
        for bad in ["3.5", "-1", "-1.0", "4294967296", "1e300", "\"3\"", "null"] {
            let e = read(&format!(r#"{{"n": {bad}}}"#));
            assert!(e.is_err(), "{bad}: {e:?}");
        }
    }

    #[test]
    fn languages() {
        assert_eq!(lang_of("fn run(x) { x }"), Some("rhai"));
        assert_eq!(
            lang_of("import math\ndef run(x):\n  return x\n"),
            Some("python")
        );
        assert_eq!(lang_of("def runner(x): pass"), None);
        assert!(check_code("function run() {}").is_err());
    }

    #[test]
    fn ranges() {
        let p = LinkParam {
            min: Some(1.0),
            max: Some(0.0),
            normalize: false,
        };
        assert!(p.check("x").is_err());
        let p = LinkParam {
            min: Some(0.0),
            max: None,
            normalize: true,
        };
        assert!(p.check("x").is_err());
    }
}
