//! `to_json_text(x)`: a nested value (struct, list, map) as its JSON text. CSV cannot hold
//! nested values, so a CSV output writes them as JSON text (what an NDJSON reader meets at
//! string), instead of failing half-way through the write.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The function; [`to_json_text`] gives it as a [`ScalarUDF`].
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ToJsonText {
    signature: Signature,
}

/// `to_json_text(x)` as a scalar function.
pub fn to_json_text() -> ScalarUDF {
    ScalarUDF::from(ToJsonText {
        signature: Signature::any(1, Volatility::Immutable),
    })
}

/// True for types CSV cannot hold.
pub fn is_nested(dt: &DataType) -> bool {
    dt.is_nested()
}

impl ScalarUDFImpl for ToJsonText {
    fn name(&self) -> &str {
        "to_json_text"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return Err(DataFusionError::Plan(
                "to_json_text takes one argument".into(),
            ));
        };
        let array = arg.to_array(args.number_rows)?;
        Ok(ColumnarValue::Array(json_texts(&array)?))
    }
}

/// Each value of `array` as JSON text (NULL stays NULL).
pub fn json_texts(array: &ArrayRef) -> Result<ArrayRef> {
    let field = Field::new("v", array.data_type().clone(), true);
    let batch = RecordBatch::try_new(Arc::new(Schema::new(vec![field])), vec![array.clone()])?;
    let mut out = Vec::new();
    {
        let mut writer = datafusion::arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, datafusion::arrow::json::writer::LineDelimited>(&mut out);
        writer.write(&batch)?;
        writer.finish()?;
    }
    let text = String::from_utf8(out).map_err(|e| DataFusionError::External(Box::new(e)))?;
    let mut builder = StringBuilder::with_capacity(array.len(), text.len());
    let mut lines = text.lines();
    for i in 0..array.len() {
        let line = lines.next().ok_or_else(|| {
            DataFusionError::Internal("to_json_text: fewer lines than rows".into())
        })?;
        // Every line is `{"v":VALUE}`.
        let value = line
            .strip_prefix("{\"v\":")
            .and_then(|rest| rest.strip_suffix('}'))
            .ok_or_else(|| DataFusionError::Internal(format!("to_json_text: line '{line}'")))?;
        if array.is_null(i) {
            builder.append_null();
        } else {
            builder.append_value(value);
        }
    }
    Ok(Arc::new(builder.finish()))
}

/// `csv_safe(text)`: a text cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`,
/// tab or carriage return first) gets a leading `'`.
fn csv_safe_udf() -> ScalarUDF {
    datafusion::logical_expr::create_udf(
        "csv_safe",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let [arg] = args else {
                return Err(DataFusionError::Plan("csv_safe takes one argument".into()));
            };
            let array = arg.to_array(1)?;
            let text = array
                .as_any()
                .downcast_ref::<datafusion::arrow::array::StringArray>()
                .ok_or_else(|| DataFusionError::Internal("csv_safe: not text".into()))?;
            let out: datafusion::arrow::array::StringArray = text
                .iter()
                .map(|v| {
                    v.map(|s| {
                        if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
                            format!("'{s}")
                        } else {
                            s.to_string()
                        }
                    })
                })
                .collect();
            Ok(ColumnarValue::Array(Arc::new(out)))
        }),
    )
}

/// Every text column of `df` through `csv_safe`.
pub fn csv_safe(df: datafusion::prelude::DataFrame) -> Result<datafusion::prelude::DataFrame> {
    let udf = csv_safe_udf();
    let exprs: Vec<datafusion::prelude::Expr> = df
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let c = datafusion::prelude::Expr::Column(datafusion::common::Column::new_unqualified(
                f.name(),
            ));
            if f.data_type() == &DataType::Utf8 {
                udf.call(vec![c]).alias(f.name())
            } else {
                c
            }
        })
        .collect();
    df.select(exprs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, ListArray, StringArray, StructArray};
    use datafusion::arrow::datatypes::Int64Type;

    #[test]
    fn nested_values_become_json_text() -> Result<()> {
        let list: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), None]),
            None,
            Some(vec![]),
        ]));
        let got = json_texts(&list)?;
        let got = got.as_any().downcast_ref::<StringArray>().expect("strings");
        assert_eq!(got.value(0), "[1,null]");
        assert!(got.is_null(1));
        assert_eq!(got.value(2), "[]");

        let st: ArrayRef = Arc::new(StructArray::from(vec![(
            Arc::new(Field::new("x", DataType::Int64, true)),
            Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
        )]));
        let got = json_texts(&st)?;
        let got = got.as_any().downcast_ref::<StringArray>().expect("strings");
        assert_eq!(got.value(0), "{\"x\":1}");
        assert_eq!(got.value(1), "{\"x\":null}");
        Ok(())
    }
}
