//! A job template's survey: typed questions whose answers become extra
//! variables of the run. [`validate_questions`] checks a survey when a
//! template is saved; [`answer`] checks a launch's answers against it and
//! returns the variables, or the first bad answer as a field error
//! (`survey.<variable>`), so the form can show it next to the field.
//! Imports nothing from the crate but `domain`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::PanelError;

/// The type of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuestionType {
    Text,
    Integer,
    Float,
    Boolean,
    /// One of `choices`.
    Choice,
    /// Any subset of `choices`, as a list.
    Multichoice,
}

/// One question of a survey.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    /// The extra variable the answer is stored in.
    pub variable: String,
    #[serde(default)]
    pub label: String,
    #[serde(rename = "type")]
    pub kind: QuestionType,
    #[serde(default)]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Least value (numbers) or length (text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Greatest value (numbers) or length (text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks a survey definition: variable names are identifiers and unique,
/// choice questions have choices, bounds are ordered, defaults are valid.
pub fn validate_questions(questions: &[Question]) -> Result<(), PanelError> {
    let mut seen = std::collections::HashSet::new();
    for (i, q) in questions.iter().enumerate() {
        let field = format!("survey[{i}].variable");
        if !is_identifier(&q.variable) {
            return Err(PanelError::invalid(
                &field,
                format!(
                    "{:?} is not a variable name (letters, digits, _)",
                    q.variable
                ),
            ));
        }
        if !seen.insert(q.variable.as_str()) {
            return Err(PanelError::invalid(
                &field,
                format!("{:?} is asked twice", q.variable),
            ));
        }
        let choice = matches!(q.kind, QuestionType::Choice | QuestionType::Multichoice);
        if choice && q.choices.is_empty() {
            return Err(PanelError::invalid(
                &format!("survey[{i}].choices"),
                "a choice question needs choices",
            ));
        }
        if let (Some(a), Some(b)) = (q.min, q.max) {
            if a > b {
                return Err(PanelError::invalid(
                    &format!("survey[{i}].min"),
                    "min is greater than max",
                ));
            }
        }
        if let Some(d) = &q.default {
            check(q, d).map_err(|m| {
                PanelError::invalid(&format!("survey[{i}].default"), format!("bad default: {m}"))
            })?;
        }
    }
    Ok(())
}

/// The extra variables of a launch: each question's answer (or default),
/// checked. Answers to variables the survey does not ask are refused.
pub fn answer(
    questions: &[Question],
    answers: &Map<String, Value>,
) -> Result<Map<String, Value>, PanelError> {
    if let Some(extra) = answers
        .keys()
        .find(|k| !questions.iter().any(|q| &q.variable == *k))
    {
        return Err(PanelError::invalid(
            &format!("survey.{extra}"),
            "the survey has no such question",
        ));
    }
    let mut vars = Map::new();
    for q in questions {
        let field = format!("survey.{}", q.variable);
        let given = answers.get(&q.variable).filter(|v| !is_blank(v));
        let value = match (given, &q.default) {
            (Some(v), _) => v.clone(),
            (None, Some(d)) => d.clone(),
            (None, None) if q.required => {
                return Err(PanelError::invalid(&field, "an answer is required"))
            }
            (None, None) => continue,
        };
        let value = check(q, &value).map_err(|m| PanelError::invalid(&field, m))?;
        vars.insert(q.variable.clone(), value);
    }
    Ok(vars)
}

fn is_blank(v: &Value) -> bool {
    matches!(v, Value::Null) || v.as_str() == Some("")
}

/// One answer checked against its question, converted to its type (form
/// posts give strings: `"3"` is the integer 3).
fn check(q: &Question, v: &Value) -> Result<Value, String> {
    let bounds = |x: f64, what: &str| -> Result<(), String> {
        if let Some(min) = q.min {
            if x < min {
                return Err(format!("{what} must be at least {min}"));
            }
        }
        if let Some(max) = q.max {
            if x > max {
                return Err(format!("{what} must be at most {max}"));
            }
        }
        Ok(())
    };
    match q.kind {
        QuestionType::Text => {
            let s = v.as_str().ok_or("expected text")?;
            bounds(s.chars().count() as f64, "the length")?;
            Ok(Value::from(s))
        }
        QuestionType::Integer => {
            let n = match v {
                Value::Number(n) => n.as_i64().ok_or("expected a whole number")?,
                Value::String(s) => s
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| format!("{s:?} is not a whole number"))?,
                _ => return Err("expected a whole number".into()),
            };
            bounds(n as f64, "the value")?;
            Ok(Value::from(n))
        }
        QuestionType::Float => {
            let n = match v {
                Value::Number(n) => n.as_f64().ok_or("expected a number")?,
                Value::String(s) => s
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| format!("{s:?} is not a number"))?,
                _ => return Err("expected a number".into()),
            };
            bounds(n, "the value")?;
            Ok(Value::from(n))
        }
        QuestionType::Boolean => match v {
            Value::Bool(b) => Ok(Value::Bool(*b)),
            Value::String(s) if matches!(s.as_str(), "true" | "on" | "yes") => {
                Ok(Value::Bool(true))
            }
            Value::String(s) if matches!(s.as_str(), "false" | "off" | "no") => {
                Ok(Value::Bool(false))
            }
            _ => Err("expected true or false".into()),
        },
        QuestionType::Choice => {
            let s = v.as_str().ok_or("expected one of the choices")?;
            if q.choices.iter().any(|c| c == s) {
                Ok(Value::from(s))
            } else {
                Err(format!("{s:?} is not one of {:?}", q.choices))
            }
        }
        QuestionType::Multichoice => {
            let items: Vec<&str> = match v {
                Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().ok_or("expected a list of choices"))
                    .collect::<Result<_, _>>()?,
                Value::String(s) => vec![s.as_str()],
                _ => return Err("expected a list of choices".into()),
            };
            if let Some(bad) = items.iter().find(|s| !q.choices.iter().any(|c| c == *s)) {
                return Err(format!("{bad:?} is not one of {:?}", q.choices));
            }
            Ok(Value::from(items))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn survey() -> Vec<Question> {
        serde_json::from_value(json!([
            {"variable": "release", "type": "text", "required": true, "min": 2, "max": 10},
            {"variable": "count", "type": "integer", "min": 1, "max": 5, "default": 2},
            {"variable": "colour", "type": "choice", "choices": ["red", "blue"]},
            {"variable": "dry", "type": "boolean"}
        ]))
        .unwrap()
    }

    #[test]
    fn answers_become_typed_variables() {
        let vars = answer(
            &survey(),
            json!({"release": "v1.2", "count": "4", "colour": "blue", "dry": "on"})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            Value::Object(vars),
            json!({"release": "v1.2", "count": 4, "colour": "blue", "dry": true})
        );
        // Defaults fill unanswered questions; optional ones stay unset.
        let vars = answer(&survey(), json!({"release": "ab"}).as_object().unwrap()).unwrap();
        assert_eq!(Value::Object(vars), json!({"release": "ab", "count": 2}));
    }

    #[test]
    fn bad_answers_name_their_field() {
        let field = |a: Value| match answer(&survey(), a.as_object().unwrap()) {
            Err(PanelError::Invalid { field, message }) => (field, message),
            other => panic!("{other:?}"),
        };
        assert_eq!(field(json!({})).0, "survey.release");
        let (f, m) = field(json!({"release": "ok", "count": 9}));
        assert_eq!(f, "survey.count");
        assert!(m.contains("at most 5"), "{m}");
        assert_eq!(
            field(json!({"release": "ok", "count": "x"})).0,
            "survey.count"
        );
        assert_eq!(
            field(json!({"release": "ok", "colour": "green"})).0,
            "survey.colour"
        );
        assert_eq!(field(json!({"release": "a"})).0, "survey.release");
        assert_eq!(
            field(json!({"release": "ok", "other": 1})).0,
            "survey.other"
        );
    }

    #[test]
    fn definitions_are_checked() {
        let bad: Vec<Question> =
            serde_json::from_value(json!([{"variable": "1x", "type": "text"}])).unwrap();
        assert!(validate_questions(&bad).is_err());
        let bad: Vec<Question> =
            serde_json::from_value(json!([{"variable": "c", "type": "choice"}])).unwrap();
        assert!(validate_questions(&bad).is_err());
        let bad: Vec<Question> = serde_json::from_value(
            json!([{"variable": "n", "type": "integer", "max": 3, "default": 7}]),
        )
        .unwrap();
        assert!(validate_questions(&bad).is_err());
        assert!(validate_questions(&survey()).is_ok());
    }
}
