//! Kernel routing tables by name or number, as iproute2 names them: `main`, `local`, `100`,
//! or a name from `rt_tables`.

pub const RT_TABLE_DEFAULT: u32 = 253;
pub const RT_TABLE_MAIN: u32 = 254;
pub const RT_TABLE_LOCAL: u32 = 255;

/// Where iproute2 keeps table names.
const RT_TABLES_FILES: [&str; 2] = ["/etc/iproute2/rt_tables", "/usr/share/iproute2/rt_tables"];

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("routing table {name:?}: not main, default, local, a number or a name in {file}")]
    Unknown { name: String, file: &'static str },
    #[error("routing table 0 is no table (the kernel's \"unspecified\")")]
    Zero,
}

/// A routing table's id from its name (`main`, `default`, `local`, a name in iproute2's
/// `rt_tables`) or number.
pub fn parse_table(text: &str) -> Result<u32, TableError> {
    match text {
        "main" => return Ok(RT_TABLE_MAIN),
        "default" => return Ok(RT_TABLE_DEFAULT),
        "local" => return Ok(RT_TABLE_LOCAL),
        _ => {}
    }
    if let Ok(id) = text.parse::<u32>() {
        return table_id(id);
    }
    for file in RT_TABLES_FILES {
        let Ok(names) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in names.lines() {
            let mut words = line.split_whitespace();
            if let (Some(id), Some(name)) = (words.next(), words.next())
                && name == text
                && let Ok(id) = id.parse()
            {
                return table_id(id);
            }
        }
    }
    Err(TableError::Unknown {
        name: text.to_owned(),
        file: RT_TABLES_FILES[0],
    })
}

fn table_id(id: u32) -> Result<u32, TableError> {
    if id == 0 {
        return Err(TableError::Zero);
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_by_name_and_number() {
        assert_eq!(parse_table("main"), Ok(254));
        assert_eq!(parse_table("100"), Ok(100));
        assert_eq!(parse_table("4000000000"), Ok(4_000_000_000));
        assert!(
            parse_table("0")
                .unwrap_err()
                .to_string()
                .contains("table 0")
        );
        assert!(
            parse_table("no-such-table")
                .unwrap_err()
                .to_string()
                .contains("\"no-such-table\": not main, default, local, a number")
        );
    }
}
