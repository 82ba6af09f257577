//! Amazon EventBridge schedule expressions, `rate(value unit)` and `cron(fields)`: parsed,
//! validated with EventBridge's rules, and evaluated to fire times in an IANA time zone.
//!
//! Pure rules: no clock is read here (callers pass the instants), and the time zone database
//! is the one bundled into the binary, so nothing touches the file system.
//!
//! Sources (AWS's public documentation):
//! - EventBridge "Cron expressions reference" and "Rate expressions reference": the fields, the
//!   values and wildcards each field allows, the `?` rule, the singular/plural rule for rates.
//! - EventBridge Scheduler "Schedule types" and the AWS knowledge-center article on daylight
//!   saving time: cron is evaluated in the schedule's time zone; a time skipped when clocks go
//!   forward does not fire; a time repeated when clocks go back fires once; a rate's day is
//!   24 hours of elapsed time, whatever the clocks do.

use std::fmt;
use std::str::FromStr;

use jiff::civil::{Date, DateTime};
use jiff::tz::AmbiguousOffset;
use jiff::SignedDuration;

pub use jiff::tz::TimeZone;
pub use jiff::Timestamp;

/// The first year a cron expression's year field may name (EventBridge: 1970-2199).
pub const MIN_YEAR: u16 = 1970;
/// The last year a cron expression's year field may name; no fire time exists after it.
pub const MAX_YEAR: u16 = 2199;

/// The six fields of a cron expression, in order, for error messages and matching on errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CronField {
    Minutes,
    Hours,
    DayOfMonth,
    Month,
    DayOfWeek,
    Year,
}

impl CronField {
    /// The field's name as EventBridge's documentation spells it.
    pub fn name(self) -> &'static str {
        match self {
            CronField::Minutes => "minutes",
            CronField::Hours => "hours",
            CronField::DayOfMonth => "day-of-month",
            CronField::Month => "month",
            CronField::DayOfWeek => "day-of-week",
            CronField::Year => "year",
        }
    }

    /// Smallest and largest value, from the table in EventBridge's cron reference.
    fn bounds(self) -> (u16, u16) {
        match self {
            CronField::Minutes => (0, 59),
            CronField::Hours => (0, 23),
            CronField::DayOfMonth => (1, 31),
            CronField::Month => (1, 12),
            CronField::DayOfWeek => (1, 7),
            CronField::Year => (MIN_YEAR, MAX_YEAR),
        }
    }

    /// The wildcards the field allows, as listed in EventBridge's cron reference.
    fn wildcards(self) -> &'static str {
        match self {
            CronField::Minutes | CronField::Hours | CronField::Month | CronField::Year => ", - * /",
            CronField::DayOfMonth => ", - * ? / L W",
            CronField::DayOfWeek => ", - * ? L #",
        }
    }
}

impl fmt::Display for CronField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a schedule expression or a time zone name was refused. Every message names the part
/// at fault (the field and its text, the rate's value or unit).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "schedule expression {expression:?} is not rate(value unit) or cron(fields): {reason}"
    )]
    Malformed { expression: String, reason: String },
    #[error("rate expression {expression:?}: {reason}")]
    Rate { expression: String, reason: String },
    #[error(
        "cron expression {expression:?} has {found} field(s); EventBridge cron expressions have \
         exactly six: minutes hours day-of-month month day-of-week year"
    )]
    CronFieldCount { expression: String, found: usize },
    #[error("cron {field} field {value:?}: {reason}")]
    CronField {
        field: CronField,
        value: String,
        reason: String,
    },
    #[error("cron expression {expression:?}: {reason}")]
    CronDays { expression: String, reason: String },
    #[error(
        "time zone {name:?} is not a known IANA time zone name (such as \"America/New_York\" or \"UTC\")"
    )]
    UnknownTimeZone { name: String },
}

/// Looks up an IANA time zone name ("America/New_York", "Europe/Berlin", "UTC") in the bundled
/// time zone database. Fixed offsets and POSIX TZ strings are refused: EventBridge Scheduler
/// takes zone names.
pub fn parse_time_zone(name: &str) -> Result<TimeZone, ScheduleError> {
    let unknown = || ScheduleError::UnknownTimeZone {
        name: name.to_string(),
    };
    if name.is_empty() || name.trim() != name {
        return Err(unknown());
    }
    TimeZone::get(name).map_err(|_| unknown())
}

/// A parsed EventBridge schedule expression. `Display` gives its canonical text.
#[derive(Debug, Clone, PartialEq, Eq)]
// A schedule is parsed once and kept; the few hundred bytes of a cron's value sets are not
// worth a box and the indirection it would add to every match.
#[allow(clippy::large_enum_variant)]
pub enum ScheduleExpression {
    Rate(RateExpr),
    Cron(CronExpr),
}

impl ScheduleExpression {
    /// The first fire time strictly after `after`.
    ///
    /// A cron expression is evaluated on the wall clock of `tz` (see [`CronExpr::next_after`]);
    /// `rate_anchor` is ignored. A rate expression fires at `rate_anchor + k·period`
    /// (see [`RateExpr::next_after`]); `tz` is ignored, since a rate's period is elapsed time.
    /// A schedule's start date, for cron, is applied by the caller through `after`.
    pub fn next_after(
        &self,
        after: Timestamp,
        tz: &TimeZone,
        rate_anchor: Timestamp,
    ) -> Option<Timestamp> {
        match self {
            ScheduleExpression::Rate(rate) => rate.next_after(after, rate_anchor),
            ScheduleExpression::Cron(cron) => cron.next_after(after, tz),
        }
    }

    /// The fire times after `after`, in order (for previews such as "next 5 runs").
    pub fn upcoming<'a>(
        &'a self,
        after: Timestamp,
        tz: &'a TimeZone,
        rate_anchor: Timestamp,
    ) -> impl Iterator<Item = Timestamp> + 'a {
        let mut cursor = after;
        std::iter::from_fn(move || {
            let next = self.next_after(cursor, tz, rate_anchor)?;
            cursor = next;
            Some(next)
        })
    }
}

impl FromStr for ScheduleExpression {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let malformed = |reason: &str| ScheduleError::Malformed {
            expression: text.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(malformed("it is empty"));
        }
        if let Some(rest) = trimmed.strip_prefix("rate") {
            let body = parenthesised(text, rest)?;
            return RateExpr::parse_body(text, body).map(ScheduleExpression::Rate);
        }
        if let Some(rest) = trimmed.strip_prefix("cron") {
            let body = parenthesised(text, rest)?;
            return CronExpr::parse_body(text, body).map(ScheduleExpression::Cron);
        }
        if trimmed.starts_with("at(") {
            return Err(malformed(
                "one-time at(...) schedules are not supported; use rate(...) or cron(...)",
            ));
        }
        Err(malformed("it must start with rate( or cron("))
    }
}

impl fmt::Display for ScheduleExpression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleExpression::Rate(rate) => fmt::Display::fmt(rate, f),
            ScheduleExpression::Cron(cron) => fmt::Display::fmt(cron, f),
        }
    }
}

/// The text between `(` and `)` that must make up the rest of the expression after its keyword.
fn parenthesised<'a>(expression: &str, rest: &'a str) -> Result<&'a str, ScheduleError> {
    let malformed = |reason: String| ScheduleError::Malformed {
        expression: expression.to_string(),
        reason,
    };
    let Some(inner_and_after) = rest.strip_prefix('(') else {
        return Err(malformed(
            "the opening parenthesis must follow the keyword directly".to_string(),
        ));
    };
    let Some(close) = inner_and_after.find(')') else {
        return Err(malformed(
            "the parentheses are unbalanced: the closing parenthesis is missing".to_string(),
        ));
    };
    let inner = &inner_and_after[..close];
    let after = &inner_and_after[close + 1..];
    if inner.contains('(') || after.contains(')') {
        return Err(malformed(
            "the parentheses are unbalanced: only one pair is allowed".to_string(),
        ));
    }
    if !after.is_empty() {
        return Err(malformed(format!(
            "unexpected text {after:?} after the closing parenthesis"
        )));
    }
    Ok(inner)
}

// ---------------------------------------------------------------------------------------------
// rate(value unit)
// ---------------------------------------------------------------------------------------------

/// The unit of a rate expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateUnit {
    Minute,
    Hour,
    Day,
}

impl RateUnit {
    fn seconds(self) -> i64 {
        match self {
            RateUnit::Minute => 60,
            RateUnit::Hour => 3_600,
            // A rate's day is 24 hours of elapsed time, not a calendar day: EventBridge
            // Scheduler documents that daylight saving time does not stretch or shrink it.
            RateUnit::Day => 86_400,
        }
    }

    fn singular(self) -> &'static str {
        match self {
            RateUnit::Minute => "minute",
            RateUnit::Hour => "hour",
            RateUnit::Day => "day",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            RateUnit::Minute => "minutes",
            RateUnit::Hour => "hours",
            RateUnit::Day => "days",
        }
    }
}

/// `rate(value unit)`: every `value` minutes, hours or days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateExpr {
    value: u32,
    unit: RateUnit,
}

impl RateExpr {
    /// A rate with a positive value; `None` for zero.
    pub fn new(value: u32, unit: RateUnit) -> Option<RateExpr> {
        (value > 0).then_some(RateExpr { value, unit })
    }

    pub fn value(&self) -> u32 {
        self.value
    }

    pub fn unit(&self) -> RateUnit {
        self.unit
    }

    /// The time between two fires.
    pub fn period(&self) -> SignedDuration {
        // u32 × 86 400 fits an i64 with room to spare.
        SignedDuration::from_secs(i64::from(self.value) * self.unit.seconds())
    }

    /// The first fire time strictly after `after`, for a schedule whose fires are anchored at
    /// `anchor` (its start date, or its creation time when it has none: EventBridge Scheduler
    /// starts a rate schedule without a start date immediately).
    ///
    /// Fires are `anchor + k·period` for k = 0, 1, 2, …; this returns the smallest such time
    /// that is later than `after` (so `anchor` itself when `after` is earlier than it). The
    /// anchor keeps its seconds: fires do not drift to whole minutes. `None` only when the
    /// result would leave the representable range of timestamps.
    pub fn next_after(&self, after: Timestamp, anchor: Timestamp) -> Option<Timestamp> {
        if anchor > after {
            return Some(anchor);
        }
        let period = self.period().as_nanos();
        let elapsed = after.as_nanosecond() - anchor.as_nanosecond();
        let periods = elapsed / period + 1;
        let offset = periods.checked_mul(period)?;
        Timestamp::from_nanosecond(anchor.as_nanosecond().checked_add(offset)?).ok()
    }

    fn parse_body(expression: &str, body: &str) -> Result<RateExpr, ScheduleError> {
        let error = |reason: String| ScheduleError::Rate {
            expression: expression.to_string(),
            reason,
        };
        let parts: Vec<&str> = body.split_whitespace().collect();
        let [value_text, unit_text] = parts[..] else {
            return Err(error(format!(
                "expected a value and a unit separated by a space, such as rate(5 minutes), \
                 but found {} part(s)",
                parts.len()
            )));
        };
        if !value_text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(error(format!(
                "the value {value_text:?} is not a positive whole number"
            )));
        }
        let value: u32 = value_text
            .parse()
            .map_err(|_| error(format!("the value {value_text:?} is too large")))?;
        if value == 0 {
            return Err(error(
                "the value must be a positive whole number, not 0".to_string(),
            ));
        }
        let (unit, plural) = match unit_text {
            "minute" => (RateUnit::Minute, false),
            "minutes" => (RateUnit::Minute, true),
            "hour" => (RateUnit::Hour, false),
            "hours" => (RateUnit::Hour, true),
            "day" => (RateUnit::Day, false),
            "days" => (RateUnit::Day, true),
            other => {
                return Err(error(format!(
                    "the unit {other:?} is not one of minute, minutes, hour, hours, day, days"
                )))
            }
        };
        // EventBridge: "If the value is equal to 1, then the unit must be singular. If the
        // value is greater than 1, the unit must be plural."
        if value == 1 && plural {
            return Err(error(format!(
                "a value of 1 takes the singular unit {:?}, not {unit_text:?}",
                unit.singular()
            )));
        }
        if value > 1 && !plural {
            return Err(error(format!(
                "a value greater than 1 takes the plural unit {:?}, not {unit_text:?}",
                unit.plural()
            )));
        }
        Ok(RateExpr { value, unit })
    }
}

impl fmt::Display for RateExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = if self.value == 1 {
            self.unit.singular()
        } else {
            self.unit.plural()
        };
        write!(f, "rate({} {unit})", self.value)
    }
}

// ---------------------------------------------------------------------------------------------
// cron(minutes hours day-of-month month day-of-week year)
// ---------------------------------------------------------------------------------------------

/// A set of field values, as a bitmap over `value - base` (years need 230 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ValueSet {
    base: u16,
    bits: [u64; 4],
}

impl ValueSet {
    fn empty(base: u16) -> ValueSet {
        ValueSet { base, bits: [0; 4] }
    }

    fn insert(&mut self, value: u16) {
        let i = usize::from(value - self.base);
        self.bits[i / 64] |= 1 << (i % 64);
    }

    fn contains(&self, value: u16) -> bool {
        value >= self.base && {
            let i = usize::from(value - self.base);
            i < 256 && self.bits[i / 64] & (1 << (i % 64)) != 0
        }
    }

    /// The smallest member that is `>= from`.
    fn next_from(&self, from: u16) -> Option<u16> {
        let mut i = usize::from(from.saturating_sub(self.base));
        while i < 256 {
            let word = self.bits[i / 64] >> (i % 64);
            if word != 0 {
                let found = i + word.trailing_zeros() as usize;
                return u16::try_from(found).ok().map(|v| v + self.base);
            }
            i = (i / 64 + 1) * 64;
        }
        None
    }
}

/// How the day is chosen: by day of month or by day of week (EventBridge requires `?` in the
/// other field, so exactly one applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum DayRule {
    /// Listed days of the month (`1,15`, `1-7`, `*/2`, `*`).
    MonthDays(ValueSet),
    /// `L`: the last day of the month.
    LastDayOfMonth,
    /// `LW`: the last weekday (Monday to Friday) of the month.
    LastWeekdayOfMonth,
    /// `15W`: the weekday nearest the 15th, never crossing into another month.
    NearestWeekday(u8),
    /// Listed days of the week, 1 = Sunday … 7 = Saturday (`MON-FRI`, `1,7`, `L` = Saturday).
    WeekDays(ValueSet),
    /// `5L`: the last Thursday (5) of the month.
    LastWeekdayOf(u8),
    /// `3#2`: the second Tuesday of the month.
    NthWeekday { weekday: u8, nth: u8 },
}

/// A parsed `cron(...)` expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CronExpr {
    /// Canonical field text (upper case), for `Display`.
    fields: [String; 6],
    minutes: ValueSet,
    hours: ValueSet,
    months: ValueSet,
    years: ValueSet,
    days: DayRule,
}

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
// EventBridge numbers the days of the week 1-7 starting with Sunday ("3#2" is the second
// Tuesday in its reference).
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl CronExpr {
    fn parse_body(expression: &str, body: &str) -> Result<CronExpr, ScheduleError> {
        let texts: Vec<&str> = body.split_whitespace().collect();
        if texts.len() != 6 {
            return Err(ScheduleError::CronFieldCount {
                expression: expression.to_string(),
                found: texts.len(),
            });
        }
        // Names and wildcards are accepted in either case; errors quote the text as given.
        let fields: [String; 6] = std::array::from_fn(|i| texts[i].to_ascii_uppercase());
        let text = |field: CronField| texts[field as usize];

        let minutes = parse_list(CronField::Minutes, text(CronField::Minutes))?;
        let hours = parse_list(CronField::Hours, text(CronField::Hours))?;
        let month_day = parse_day_of_month(text(CronField::DayOfMonth))?;
        let months = parse_list(CronField::Month, text(CronField::Month))?;
        let week_day = parse_day_of_week(text(CronField::DayOfWeek))?;
        let years = parse_list(CronField::Year, text(CronField::Year))?;

        // EventBridge: "You can't specify the Day-of-month and Day-of-week fields in the same
        // cron expression. If you specify a value or a * (asterisk) in one of the fields, you
        // must use a ? (question mark) in the other."
        let days = match (month_day, week_day) {
            (Some(rule), None) | (None, Some(rule)) => rule,
            (Some(_), Some(_)) => {
                return Err(ScheduleError::CronDays {
                    expression: expression.to_string(),
                    reason: format!(
                        "day-of-month {:?} and day-of-week {:?} are both given; one of them \
                         must be ? (EventBridge cannot combine the two)",
                        text(CronField::DayOfMonth),
                        text(CronField::DayOfWeek)
                    ),
                })
            }
            (None, None) => {
                return Err(ScheduleError::CronDays {
                    expression: expression.to_string(),
                    reason: "day-of-month and day-of-week are both ?; exactly one of them must \
                             be ?, the other a value or *"
                        .to_string(),
                })
            }
        };
        Ok(CronExpr {
            fields,
            minutes,
            hours,
            months,
            years,
            days,
        })
    }

    /// The first fire time strictly after `after`, evaluating the expression on the wall clock
    /// of `tz`; `None` when no matching time exists up to the end of year 2199.
    ///
    /// Daylight saving time, as EventBridge Scheduler documents it: a wall-clock time that
    /// does not exist (skipped when clocks go forward) does not fire that day; a wall-clock
    /// time that happens twice (clocks go back) fires once, at its first occurrence. Every
    /// matching wall-clock time fires at most once, so an every-minute schedule is quiet during
    /// the repeated hour.
    ///
    /// Fires are on whole minutes. The search goes field by field (year, month, day, hour,
    /// minute) rather than minute by minute, so a rare or impossible expression
    /// (`cron(0 0 30 2 ? *)`) answers quickly.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let one_minute = SignedDuration::from_mins(1);
        let local = tz.to_datetime(after);
        let mut start = local
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(one_minute)
            .ok()?;
        loop {
            let candidate = self.next_local(start)?;
            let fire = match tz.to_ambiguous_timestamp(candidate).offset() {
                AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(candidate).ok(),
                // Skipped by the clocks going forward: EventBridge skips the invocation.
                AmbiguousOffset::Gap { .. } => None,
                // Repeated by the clocks going back: the first occurrence only.
                AmbiguousOffset::Fold { before, .. } => before.to_timestamp(candidate).ok(),
            };
            match fire {
                Some(fire) if fire > after => return Some(fire),
                // Either skipped, or a repeated time whose first occurrence is already past.
                _ => start = candidate.checked_add(one_minute).ok()?,
            }
        }
    }

    /// The first wall-clock minute at or after `start` that the expression matches.
    fn next_local(&self, start: DateTime) -> Option<DateTime> {
        // Years before 0 cannot match anyway (the year field starts at 1970).
        let start_year = u16::try_from(start.year().max(0)).ok()?;
        let start_month = start.month() as u16;
        let start_day = start.day() as u16;
        let start_hour = start.hour() as u16;
        let start_minute = start.minute() as u16;
        let first_minute = self.minutes.next_from(0)?;
        let first_hour = self.hours.next_from(0)?;

        let mut year = self.years.next_from(start_year.max(MIN_YEAR))?;
        while year <= MAX_YEAR {
            let from_start_year = year == start_year;
            let mut month = self
                .months
                .next_from(if from_start_year { start_month } else { 1 });
            while let Some(m) = month.filter(|m| *m <= 12) {
                let from_start_month = from_start_year && m == start_month;
                let days = self.days_in(year, m)?;
                let mut day = days.next_from(if from_start_month { start_day } else { 1 });
                while let Some(d) = day {
                    let from_start_day = from_start_month && d == start_day;
                    let found = if from_start_day {
                        let mut hour = self.hours.next_from(start_hour);
                        let mut result = None;
                        while let Some(h) = hour {
                            let minute_from = if h == start_hour { start_minute } else { 0 };
                            if let Some(min) = self.minutes.next_from(minute_from) {
                                result = Some((h, min));
                                break;
                            }
                            hour = self.hours.next_from(h + 1);
                        }
                        result
                    } else {
                        Some((first_hour, first_minute))
                    };
                    if let Some((h, min)) = found {
                        return DateTime::new(
                            i16::try_from(year).ok()?,
                            m as i8,
                            d as i8,
                            h as i8,
                            min as i8,
                            0,
                            0,
                        )
                        .ok();
                    }
                    day = days.next_from(d + 1);
                }
                month = self.months.next_from(m + 1);
            }
            year = self.years.next_from(year + 1)?;
        }
        None
    }

    /// The days of `month` in `year` the day rule selects.
    fn days_in(&self, year: u16, month: u16) -> Option<ValueSet> {
        let first = Date::new(i16::try_from(year).ok()?, month as i8, 1).ok()?;
        let last = first.days_in_month() as u16;
        // 1 = Sunday … 7 = Saturday, EventBridge's numbering.
        let first_weekday = first.weekday().to_sunday_one_offset() as u16;
        let weekday_of = |day: u16| (first_weekday - 1 + day - 1) % 7 + 1;
        let mut set = ValueSet::empty(1);
        match self.days {
            DayRule::MonthDays(days) => {
                for d in 1..=last {
                    if days.contains(d) {
                        set.insert(d);
                    }
                }
            }
            DayRule::LastDayOfMonth => set.insert(last),
            DayRule::LastWeekdayOfMonth => set.insert(match weekday_of(last) {
                7 => last - 1, // Saturday → Friday
                1 => last - 2, // Sunday → Friday
                _ => last,
            }),
            DayRule::NearestWeekday(n) => {
                let n = u16::from(n);
                // A month without the day (31W in April) has no fire.
                if n <= last {
                    set.insert(match weekday_of(n) {
                        // Saturday: the Friday before, unless that is in the previous month.
                        7 if n == 1 => 3,
                        7 => n - 1,
                        // Sunday: the Monday after, unless that is in the next month.
                        1 if n == last => n - 2,
                        1 => n + 1,
                        _ => n,
                    });
                }
            }
            DayRule::WeekDays(weekdays) => {
                for d in 1..=last {
                    if weekdays.contains(weekday_of(d)) {
                        set.insert(d);
                    }
                }
            }
            DayRule::LastWeekdayOf(weekday) => {
                let back = (weekday_of(last) + 7 - u16::from(weekday)) % 7;
                set.insert(last - back);
            }
            DayRule::NthWeekday { weekday, nth } => {
                let first_match = 1 + (u16::from(weekday) + 7 - first_weekday) % 7;
                let day = first_match + 7 * (u16::from(nth) - 1);
                // The fifth Monday exists only in some months.
                if day <= last {
                    set.insert(day);
                }
            }
        }
        Some(set)
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cron({})", self.fields.join(" "))
    }
}

fn field_error(field: CronField, value: &str, reason: impl Into<String>) -> ScheduleError {
    ScheduleError::CronField {
        field,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Refuses a wildcard the field does not allow, with the list of those it does.
fn check_wildcards(field: CronField, text: &str) -> Result<(), ScheduleError> {
    let forbidden: &[char] = match field {
        // Letters are checked only where no name could contain them.
        CronField::Minutes | CronField::Hours | CronField::Year => &['?', 'L', 'W', '#'],
        CronField::Month => &['?', '#'],
        CronField::DayOfMonth => &['#'],
        CronField::DayOfWeek => &['/'],
    };
    if let Some(c) = text
        .chars()
        .map(|c| c.to_ascii_uppercase())
        .find(|c| forbidden.contains(c))
    {
        return Err(field_error(
            field,
            text,
            format!(
                "the {c} wildcard is not allowed in the {field} field (it allows {})",
                field.wildcards()
            ),
        ));
    }
    Ok(())
}

/// One value of a field: a number in range, or a month or day name where the field has them.
fn parse_value(field: CronField, whole: &str, token: &str) -> Result<u16, ScheduleError> {
    let (min, max) = field.bounds();
    if token.is_empty() {
        return Err(field_error(field, whole, "a value is missing"));
    }
    if token.bytes().all(|b| b.is_ascii_digit()) {
        return match token.parse::<u16>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(field_error(
                field,
                whole,
                format!("{token} is outside {min}-{max}"),
            )),
        };
    }
    let names: &[&str] = match field {
        CronField::Month => &MONTH_NAMES,
        CronField::DayOfWeek => &DAY_NAMES,
        _ => &[],
    };
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(token)) {
        return Ok(i as u16 + 1);
    }
    let reason = match field {
        CronField::Month => format!("{token} is not a month name (JAN-DEC) or number (1-12)"),
        CronField::DayOfWeek => format!("{token} is not a day name (SUN-SAT) or number (1-7)"),
        _ => format!("{token} is not a number"),
    };
    Err(field_error(field, whole, reason))
}

/// A comma-separated list of `*`, `v`, `a-b`, with an optional `/step` (where the field
/// allows it), as a set of values.
fn parse_list(field: CronField, text: &str) -> Result<ValueSet, ScheduleError> {
    check_wildcards(field, text)?;
    if text.contains('?') {
        return Err(field_error(
            field,
            text,
            "? must be the whole field, in day-of-month or day-of-week",
        ));
    }
    let (min, max) = field.bounds();
    let span = max - min + 1;
    let mut set = ValueSet::empty(min);
    for item in text.split(',') {
        if item.is_empty() {
            return Err(field_error(field, text, "the list has an empty item"));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step_text)) => {
                let step = match step_text.parse::<u16>() {
                    Ok(step) if step_text.bytes().all(|b| b.is_ascii_digit()) => step,
                    _ => {
                        return Err(field_error(
                            field,
                            text,
                            format!("the step {step_text:?} after / is not a whole number"),
                        ))
                    }
                };
                if step == 0 || step > span {
                    return Err(field_error(
                        field,
                        text,
                        format!("the step {step} after / must be between 1 and {span}"),
                    ));
                }
                (range, step)
            }
            None => (item, 1),
        };
        let (first, last) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let a = parse_value(field, text, a)?;
            let b = parse_value(field, text, b)?;
            // The year does not wrap around; the cyclic fields do (FRI-MON, 22-2).
            if field == CronField::Year && b < a {
                return Err(field_error(
                    field,
                    text,
                    format!("the range {range} runs backwards"),
                ));
            }
            (a, b)
        } else {
            let a = parse_value(field, text, range)?;
            // `a/step` runs from a to the end of the field's range.
            (a, if item.contains('/') { max } else { a })
        };
        let length = (last + span - first) % span;
        let mut i = 0;
        while i <= length {
            set.insert(min + (first - min + i) % span);
            i += step;
        }
    }
    Ok(set)
}

/// The day-of-month field: `None` for `?`.
fn parse_day_of_month(text: &str) -> Result<Option<DayRule>, ScheduleError> {
    let field = CronField::DayOfMonth;
    check_wildcards(field, text)?;
    if text == "?" {
        return Ok(None);
    }
    if text.eq_ignore_ascii_case("L") {
        return Ok(Some(DayRule::LastDayOfMonth));
    }
    if text.eq_ignore_ascii_case("LW") {
        return Ok(Some(DayRule::LastWeekdayOfMonth));
    }
    if text.contains(['L', 'l', 'W', 'w']) {
        let Some(day) = text.strip_suffix(['W', 'w']) else {
            return Err(field_error(
                field,
                text,
                "L must be the whole field (L or LW); W follows a single day, as in 15W",
            ));
        };
        if day.is_empty() || !day.bytes().all(|b| b.is_ascii_digit()) {
            return Err(field_error(
                field,
                text,
                "W follows a single day of the month, as in 15W (not a list, range or step)",
            ));
        }
        let day = parse_value(field, text, day)?;
        return Ok(Some(DayRule::NearestWeekday(day as u8)));
    }
    parse_list(field, text).map(|days| Some(DayRule::MonthDays(days)))
}

/// The day-of-week field: `None` for `?`.
fn parse_day_of_week(text: &str) -> Result<Option<DayRule>, ScheduleError> {
    let field = CronField::DayOfWeek;
    check_wildcards(field, text)?;
    if text == "?" {
        return Ok(None);
    }
    if let Some((day, nth)) = text.split_once('#') {
        if text.contains(',') || text.contains('-') || nth.contains('#') {
            return Err(field_error(
                field,
                text,
                "# takes a single day and occurrence, as in 3#2, and must be the whole field",
            ));
        }
        let weekday = parse_value(field, text, day)?;
        let nth = match nth.parse::<u8>() {
            Ok(n @ 1..=5) if nth.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err(field_error(
                    field,
                    text,
                    format!("the occurrence {nth:?} after # must be 1-5"),
                ))
            }
        };
        return Ok(Some(DayRule::NthWeekday {
            weekday: weekday as u8,
            nth,
        }));
    }
    // A plain L is the last day of the week: Saturday (7).
    if text.eq_ignore_ascii_case("L") {
        let mut set = ValueSet::empty(1);
        set.insert(7);
        return Ok(Some(DayRule::WeekDays(set)));
    }
    // `5L` or `THUL`: the last such day of the month. Names ending in L do not exist (SUN-SAT),
    // so a trailing L is always the wildcard.
    if let Some(day) = text.strip_suffix(['L', 'l']) {
        if day.contains([',', '-', '*', 'L', 'l']) {
            return Err(field_error(
                field,
                text,
                "L follows a single day of the week, as in 5L, and must be the whole field",
            ));
        }
        let weekday = parse_value(field, text, day)?;
        return Ok(Some(DayRule::LastWeekdayOf(weekday as u8)));
    }
    parse_list(field, text).map(|days| Some(DayRule::WeekDays(days)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("test timestamp")
    }

    fn parse(text: &str) -> ScheduleExpression {
        text.parse()
            .unwrap_or_else(|e| panic!("{text} should parse: {e}"))
    }

    /// (expression, zone, after, how many fires to ask for, the fires expected). Fewer
    /// expected fires than asked for means the schedule has no more fires (before 2200).
    /// Weekdays for reference: 1 Jan 2026 is a Thursday, 1 Aug 2026 a Saturday, 31 May 2026 a
    /// Sunday. DST 2026: New York 8 Mar and 1 Nov, Berlin 29 Mar and 25 Oct.
    #[rustfmt::skip]
    const CRON_TABLE: &[(&str, &str, &str, usize, &[&str])] = &[
        // daily, first fire later the same day
        ("cron(0 10 * * ? *)", "UTC", "2026-01-15T09:00:00Z", 3, &["2026-01-15T10:00:00Z", "2026-01-16T10:00:00Z", "2026-01-17T10:00:00Z"]),
        // strictly after: a fire time itself is passed over
        ("cron(0 10 * * ? *)", "UTC", "2026-01-15T10:00:00Z", 2, &["2026-01-16T10:00:00Z", "2026-01-17T10:00:00Z"]),
        // month rollover
        ("cron(15 12 * * ? *)", "UTC", "2026-01-31T13:00:00Z", 2, &["2026-02-01T12:15:00Z", "2026-02-02T12:15:00Z"]),
        // year rollover
        ("cron(59 23 31 12 ? *)", "UTC", "2026-12-31T23:59:00Z", 2, &["2027-12-31T23:59:00Z", "2028-12-31T23:59:00Z"]),
        // L: last day of 31-, 28- and 31-day months
        ("cron(0 0 L * ? *)", "UTC", "2026-01-15T00:00:00Z", 3, &["2026-01-31T00:00:00Z", "2026-02-28T00:00:00Z", "2026-03-31T00:00:00Z"]),
        // L in a leap February is the 29th
        ("cron(0 0 L * ? *)", "UTC", "2028-01-31T00:00:00Z", 2, &["2028-02-29T00:00:00Z", "2028-03-31T00:00:00Z"]),
        // Feb 29 only in leap years
        ("cron(0 12 29 2 ? *)", "UTC", "2026-01-01T00:00:00Z", 2, &["2028-02-29T12:00:00Z", "2032-02-29T12:00:00Z"]),
        // no Feb 29 in 2026-2027
        ("cron(0 0 29 2 ? 2026-2027)", "UTC", "2026-01-01T00:00:00Z", 1, &[]),
        // Feb 30 never exists
        ("cron(0 0 30 2 ? *)", "UTC", "2026-01-01T00:00:00Z", 1, &[]),
        // 31st skips 30-day months and February
        ("cron(0 0 31 * ? *)", "UTC", "2026-01-31T00:00:00Z", 3, &["2026-03-31T00:00:00Z", "2026-05-31T00:00:00Z", "2026-07-31T00:00:00Z"]),
        // LW: Sat 31 Jan -> Fri 30, Sat 28 Feb -> Fri 27, Tue 31 Mar
        ("cron(0 0 LW * ? *)", "UTC", "2026-01-01T00:00:00Z", 3, &["2026-01-30T00:00:00Z", "2026-02-27T00:00:00Z", "2026-03-31T00:00:00Z"]),
        // LW: Sun 31 May -> Fri 29
        ("cron(0 0 LW * ? *)", "UTC", "2026-05-01T00:00:00Z", 1, &["2026-05-29T00:00:00Z"]),
        // 1W on Saturday 1 Aug -> Monday 3rd
        ("cron(0 9 1W * ? *)", "UTC", "2026-07-15T00:00:00Z", 3, &["2026-08-03T09:00:00Z", "2026-09-01T09:00:00Z", "2026-10-01T09:00:00Z"]),
        // 31W on Sunday 31 May -> Friday 29th; no June 31
        ("cron(0 9 31W * ? *)", "UTC", "2026-05-01T00:00:00Z", 3, &["2026-05-29T09:00:00Z", "2026-07-31T09:00:00Z", "2026-08-31T09:00:00Z"]),
        // 15W: Sat 15 Aug -> Fri 14; weekdays stay
        ("cron(0 9 15W * ? *)", "UTC", "2026-08-01T00:00:00Z", 3, &["2026-08-14T09:00:00Z", "2026-09-15T09:00:00Z", "2026-10-15T09:00:00Z"]),
        // 15W: Sun 15 Feb -> Mon 16
        ("cron(0 9 15W * ? *)", "UTC", "2026-02-01T00:00:00Z", 1, &["2026-02-16T09:00:00Z"]),
        // 3#2: second Tuesday
        ("cron(0 8 ? * 3#2 *)", "UTC", "2026-01-01T00:00:00Z", 3, &["2026-01-13T08:00:00Z", "2026-02-10T08:00:00Z", "2026-03-10T08:00:00Z"]),
        // fifth Monday, absent in most months
        ("cron(0 8 ? * MON#5 *)", "UTC", "2026-01-01T00:00:00Z", 3, &["2026-03-30T08:00:00Z", "2026-06-29T08:00:00Z", "2026-08-31T08:00:00Z"]),
        // 6L: last Friday
        ("cron(0 17 ? * 6L *)", "UTC", "2026-01-01T00:00:00Z", 3, &["2026-01-30T17:00:00Z", "2026-02-27T17:00:00Z", "2026-03-27T17:00:00Z"]),
        // last Sunday of February 2028, then nothing
        ("cron(0 0 ? FEB 1L 2028)", "UTC", "2026-01-01T00:00:00Z", 2, &["2028-02-27T00:00:00Z"]),
        // plain L in day-of-week: Saturday
        ("cron(0 0 ? * L *)", "UTC", "2026-01-01T00:00:00Z", 3, &["2026-01-03T00:00:00Z", "2026-01-10T00:00:00Z", "2026-01-17T00:00:00Z"]),
        // first Monday, by number
        ("cron(0 12 ? * 2#1 *)", "UTC", "2026-01-01T00:00:00Z", 2, &["2026-01-05T12:00:00Z", "2026-02-02T12:00:00Z"]),
        // 0/15 across the hour
        ("cron(0/15 * * * ? *)", "UTC", "2026-01-01T10:07:00Z", 4, &["2026-01-01T10:15:00Z", "2026-01-01T10:30:00Z", "2026-01-01T10:45:00Z", "2026-01-01T11:00:00Z"]),
        // */5; seconds of after are ignored
        ("cron(*/5 * * * ? *)", "UTC", "2026-01-01T10:59:30Z", 2, &["2026-01-01T11:00:00Z", "2026-01-01T11:05:00Z"]),
        // 10-50/20 = 10,30,50
        ("cron(10-50/20 * * * ? *)", "UTC", "2026-01-01T10:31:00Z", 3, &["2026-01-01T10:50:00Z", "2026-01-01T11:10:00Z", "2026-01-01T11:30:00Z"]),
        // 1/10 = 1,11,...,51 (EventBridge's own example)
        ("cron(1/10 * * * ? *)", "UTC", "2026-01-01T10:52:00Z", 2, &["2026-01-01T11:01:00Z", "2026-01-01T11:11:00Z"]),
        // every minute
        ("cron(* * * * ? *)", "UTC", "2026-01-01T00:00:30Z", 2, &["2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"]),
        // weekdays twice a day over a weekend
        ("cron(0 9,17 ? * MON-FRI *)", "UTC", "2026-01-02T17:00:00Z", 3, &["2026-01-05T09:00:00Z", "2026-01-05T17:00:00Z", "2026-01-06T09:00:00Z"]),
        // named months and day
        ("cron(30 6 ? JAN,JUL SUN *)", "UTC", "2026-01-20T00:00:00Z", 3, &["2026-01-25T06:30:00Z", "2026-07-05T06:30:00Z", "2026-07-12T06:30:00Z"]),
        // */3 months = JAN,APR,JUL,OCT
        ("cron(0 0 1 */3 ? *)", "UTC", "2026-02-01T00:00:00Z", 3, &["2026-04-01T00:00:00Z", "2026-07-01T00:00:00Z", "2026-10-01T00:00:00Z"]),
        // year list, then nothing
        ("cron(0 0 1 1 ? 2027,2029)", "UTC", "2026-06-01T00:00:00Z", 3, &["2027-01-01T00:00:00Z", "2029-01-01T00:00:00Z"]),
        // day range wrapping past Saturday
        ("cron(0 12 ? * FRI-MON *)", "UTC", "2026-01-01T00:00:00Z", 5, &["2026-01-02T12:00:00Z", "2026-01-03T12:00:00Z", "2026-01-04T12:00:00Z", "2026-01-05T12:00:00Z", "2026-01-09T12:00:00Z"]),
        // hour range wrapping past midnight
        ("cron(0 22-1 * * ? *)", "UTC", "2026-01-01T21:00:00Z", 5, &["2026-01-01T22:00:00Z", "2026-01-01T23:00:00Z", "2026-01-02T00:00:00Z", "2026-01-02T01:00:00Z", "2026-01-02T22:00:00Z"]),
        // nothing after 2199
        ("cron(0 0 * * ? 2199)", "UTC", "2199-12-31T00:00:00Z", 1, &[]),
        // nothing after 2199
        ("cron(0 0 1 JAN ? *)", "UTC", "2199-06-01T00:00:00Z", 1, &[]),
        // the very last year
        ("cron(0 0 31 12 ? 2199)", "UTC", "1970-01-01T00:00:00Z", 1, &["2199-12-31T00:00:00Z"]),
        // before 1970: first fire in 1970
        ("cron(0 0 1 1 ? *)", "UTC", "1969-06-01T00:00:00Z", 1, &["1970-01-01T00:00:00Z"]),
        // 02:30 does not exist on 8 Mar 2026: skipped
        ("cron(30 2 * * ? *)", "America/New_York", "2026-03-07T05:00:00Z", 3, &["2026-03-07T07:30:00Z", "2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z"]),
        // 01:30 happens twice on 1 Nov 2026: fires once
        ("cron(30 1 * * ? *)", "America/New_York", "2026-10-31T12:00:00Z", 2, &["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]),
        // after the first 01:30, the repeated one is passed over
        ("cron(30 1 * * ? *)", "America/New_York", "2026-11-01T05:30:00Z", 1, &["2026-11-02T06:30:00Z"]),
        // hourly across fall-back: the repeated 01:00 is quiet
        ("cron(0 * * * ? *)", "America/New_York", "2026-11-01T04:30:00Z", 3, &["2026-11-01T05:00:00Z", "2026-11-01T07:00:00Z", "2026-11-01T08:00:00Z"]),
        // hourly across spring-forward
        ("cron(0 * * * ? *)", "America/New_York", "2026-03-08T06:30:00Z", 2, &["2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z"]),
        // 01:00 and 01:30 once each in the repeated hour
        ("cron(*/30 1 * * ? *)", "America/New_York", "2026-11-01T04:00:00Z", 3, &["2026-11-01T05:00:00Z", "2026-11-01T05:30:00Z", "2026-11-02T06:00:00Z"]),
        // 09:00 local follows the clock change (14:00Z -> 13:00Z)
        ("cron(0 9 * * ? *)", "America/New_York", "2026-03-06T15:00:00Z", 3, &["2026-03-07T14:00:00Z", "2026-03-08T13:00:00Z", "2026-03-09T13:00:00Z"]),
        // 09:00 local in autumn (13:00Z -> 14:00Z)
        ("cron(0 9 * * ? *)", "America/New_York", "2026-10-31T12:00:00Z", 2, &["2026-10-31T13:00:00Z", "2026-11-01T14:00:00Z"]),
        // 02:30 does not exist on 29 Mar 2026 in Berlin
        ("cron(30 2 * * ? *)", "Europe/Berlin", "2026-03-28T00:00:00Z", 2, &["2026-03-28T01:30:00Z", "2026-03-30T00:30:00Z"]),
        // 02:30 happens twice on 25 Oct 2026 in Berlin: once
        ("cron(30 2 * * ? *)", "Europe/Berlin", "2026-10-24T12:00:00Z", 2, &["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]),
        // local midnight of the last day
        ("cron(0 0 L * ? *)", "Europe/Berlin", "2026-02-01T00:00:00Z", 2, &["2026-02-27T23:00:00Z", "2026-03-30T22:00:00Z"]),
        // half-hour offset
        ("cron(0 8 ? * MON *)", "Asia/Kolkata", "2026-01-01T00:00:00Z", 2, &["2026-01-05T02:30:00Z", "2026-01-12T02:30:00Z"]),
        // the 1st local is the previous day in UTC
        ("cron(0 0 1 * ? *)", "Pacific/Auckland", "2026-01-31T00:00:00Z", 2, &["2026-01-31T11:00:00Z", "2026-02-28T11:00:00Z"]),
    ];

    #[test]
    fn cron_fire_times_match_the_table() {
        assert!(CRON_TABLE.len() >= 40);
        let anchor = ts("2000-01-01T00:00:00Z");
        for (text, zone, after, count, expected) in CRON_TABLE {
            let expression = parse(text);
            assert!(matches!(expression, ScheduleExpression::Cron(_)), "{text}");
            let tz = parse_time_zone(zone).expect("zone");
            let fires: Vec<String> = expression
                .upcoming(ts(after), &tz, anchor)
                .take(*count)
                .map(|t| t.to_string())
                .collect();
            assert_eq!(&fires, expected, "{text} in {zone} after {after}");
        }
    }

    /// (expression, anchor, after, fires expected): fires are anchor + k·period, k >= 0.
    #[rustfmt::skip]
    const RATE_TABLE: &[(&str, &str, &str, &[&str])] = &[
        // Before the anchor, the anchor itself is the first fire (a schedule starts at once).
        ("rate(1 minute)", "2026-01-01T00:00:00Z", "2025-12-31T23:00:00Z",
         &["2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"]),
        // Seconds of the anchor are kept: fires stay on its phase.
        ("rate(5 minutes)", "2026-01-01T00:00:20Z", "2026-01-01T00:12:00Z",
         &["2026-01-01T00:15:20Z", "2026-01-01T00:20:20Z"]),
        // Strictly after: a fire time itself is passed over.
        ("rate(5 minutes)", "2026-01-01T00:00:20Z", "2026-01-01T00:15:20Z",
         &["2026-01-01T00:20:20Z", "2026-01-01T00:25:20Z"]),
        ("rate(5 minutes)", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z",
         &["2026-01-01T00:05:00Z"]),
        // Hours are elapsed time: the New York clock change on 8 Mar 2026 does not move them.
        ("rate(2 hours)", "2026-03-08T05:00:00Z", "2026-03-08T06:00:00Z",
         &["2026-03-08T07:00:00Z", "2026-03-08T09:00:00Z", "2026-03-08T11:00:00Z"]),
        // A day is 24 hours: 09:00 EST on 7 Mar becomes 10:00 EDT on 8 Mar.
        ("rate(1 day)", "2026-03-07T14:00:00Z", "2026-03-07T14:00:00Z",
         &["2026-03-08T14:00:00Z", "2026-03-09T14:00:00Z"]),
        ("rate(3 days)", "2026-01-30T12:00:00Z", "2026-02-01T00:00:00Z",
         &["2026-02-02T12:00:00Z", "2026-02-05T12:00:00Z"]),
        // Long after the anchor: no drift over a year of minutes.
        ("rate(7 minutes)", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z",
         // 525 600 minutes = 75 085 periods + 5 minutes: the next fire is 2 minutes away.
         &["2027-01-01T00:02:00Z", "2027-01-01T00:09:00Z"]),
        ("rate(1 hour)", "2026-01-01T00:30:00Z", "2026-01-01T05:59:59Z",
         &["2026-01-01T06:30:00Z"]),
    ];

    #[test]
    fn rate_fire_times_match_the_table() {
        // The zone is ignored for rates; a DST zone proves it.
        let tz = parse_time_zone("America/New_York").expect("zone");
        for (text, anchor, after, expected) in RATE_TABLE {
            let expression = parse(text);
            assert!(matches!(expression, ScheduleExpression::Rate(_)), "{text}");
            let fires: Vec<String> = expression
                .upcoming(ts(after), &tz, ts(anchor))
                .take(expected.len())
                .map(|t| t.to_string())
                .collect();
            assert_eq!(
                &fires, expected,
                "{text} anchored at {anchor} after {after}"
            );
        }
    }

    #[test]
    fn rate_periods_and_units() {
        let ScheduleExpression::Rate(rate) = parse("rate(90 minutes)") else {
            panic!("not a rate");
        };
        assert_eq!(rate.value(), 90);
        assert_eq!(rate.unit(), RateUnit::Minute);
        assert_eq!(rate.period(), SignedDuration::from_mins(90));
        let ScheduleExpression::Rate(rate) = parse("rate(2 days)") else {
            panic!("not a rate");
        };
        assert_eq!(rate.period(), SignedDuration::from_hours(48));
        assert_eq!(RateExpr::new(0, RateUnit::Hour), None);
        assert_eq!(
            RateExpr::new(1, RateUnit::Hour).map(|r| r.to_string()),
            Some("rate(1 hour)".to_string())
        );
    }

    /// (input, text the error message must contain).
    #[rustfmt::skip]
    const MALFORMED: &[(&str, &[&str])] = &[
        ("", &["is empty"]),
        ("every 5 minutes", &["must start with rate( or cron("]),
        ("RATE(5 minutes)", &["must start with rate( or cron("]),
        ("at(2026-01-01T00:00:00)", &["at(...)", "not supported"]),
        ("cron(0 0 * * ? *", &["unbalanced", "closing parenthesis is missing"]),
        ("cron 0 0 * * ? *)", &["opening parenthesis"]),
        ("cron((0 0 * * ? *))", &["unbalanced"]),
        ("rate(5 minutes))", &["unbalanced"]),
        ("cron(0 0 * * ? *) daily", &["\" daily\" after the closing parenthesis"]),
        // Rates.
        ("rate(1 minutes)", &["value of 1 takes the singular unit \"minute\", not \"minutes\""]),
        ("rate(1 hours)", &["singular unit \"hour\""]),
        ("rate(5 minute)", &["greater than 1 takes the plural unit \"minutes\", not \"minute\""]),
        ("rate(2 day)", &["plural unit \"days\""]),
        ("rate(0 minutes)", &["positive whole number, not 0"]),
        ("rate(5 weeks)", &["unit \"weeks\" is not one of minute, minutes, hour, hours, day, days"]),
        ("rate(5 Minutes)", &["unit \"Minutes\""]),
        ("rate(-5 minutes)", &["value \"-5\" is not a positive whole number"]),
        ("rate(1.5 hours)", &["value \"1.5\" is not a positive whole number"]),
        ("rate(99999999999 minutes)", &["value \"99999999999\" is too large"]),
        ("rate(5)", &["a value and a unit", "found 1 part(s)"]),
        ("rate(5 minutes now)", &["found 3 part(s)"]),
        // Field count.
        ("cron(0 0 * * ?)", &["has 5 field(s)", "exactly six"]),
        ("cron(0 0 * * ? * *)", &["has 7 field(s)"]),
        ("cron()", &["has 0 field(s)"]),
        // The ? rule.
        ("cron(* * * * * *)", &["day-of-month \"*\" and day-of-week \"*\" are both given", "must be ?"]),
        ("cron(0 0 L * MON *)", &["day-of-month \"L\" and day-of-week \"MON\" are both given"]),
        ("cron(0 0 ? * ? *)", &["both ?"]),
        ("cron(? 0 * * ? *)", &["cron minutes field \"?\"", "? wildcard is not allowed in the minutes field"]),
        // Values out of range.
        ("cron(60 * * * ? *)", &["cron minutes field \"60\": 60 is outside 0-59"]),
        ("cron(0 24 * * ? *)", &["cron hours field \"24\": 24 is outside 0-23"]),
        ("cron(0 0 32 * ? *)", &["cron day-of-month field \"32\": 32 is outside 1-31"]),
        ("cron(0 0 0 * ? *)", &["cron day-of-month field \"0\": 0 is outside 1-31"]),
        ("cron(0 0 1 13 ? *)", &["cron month field \"13\": 13 is outside 1-12"]),
        ("cron(0 0 ? * 8 *)", &["cron day-of-week field \"8\": 8 is outside 1-7"]),
        ("cron(0 0 ? * 0 *)", &["cron day-of-week field \"0\": 0 is outside 1-7"]),
        ("cron(0 0 1 1 ? 2300)", &["cron year field \"2300\": 2300 is outside 1970-2199"]),
        ("cron(0 0 1 1 ? 1969)", &["1969 is outside 1970-2199"]),
        ("cron(0 0 1 1 ? 2030-2025)", &["cron year field \"2030-2025\": the range 2030-2025 runs backwards"]),
        // Names.
        ("cron(0 0 1 FOO ? *)", &["cron month field \"FOO\": FOO is not a month name"]),
        ("cron(0 0 ? * MON-FOO *)", &["cron day-of-week field \"MON-FOO\": FOO is not a day name"]),
        ("cron(0 0 ? * MONDAY *)", &["MONDAY is not a day name"]),
        ("cron(x 0 * * ? *)", &["cron minutes field \"x\": x is not a number"]),
        ("cron(0 0 ? * mon-foo *)", &["cron day-of-week field \"mon-foo\": foo is not a day name"]),
        ("cron(0 0 1 jan-foo ? *)", &["cron month field \"jan-foo\": foo is not a month name"]),
        // Wildcards where the field does not allow them.
        ("cron(0 L * * ? *)", &["cron hours field \"L\"", "L wildcard is not allowed in the hours field"]),
        ("cron(0 0 ? * 1/2 *)", &["cron day-of-week field \"1/2\"", "/ wildcard is not allowed in the day-of-week field"]),
        ("cron(0 0 # * ? *)", &["# wildcard is not allowed in the day-of-month field"]),
        ("cron(0 0 ? * 1#6 *)", &["cron day-of-week field \"1#6\": the occurrence \"6\" after # must be 1-5"]),
        ("cron(0 0 ? * 1#0 *)", &["occurrence \"0\""]),
        ("cron(0 0 ? * 3#1,6#3 *)", &["# takes a single day and occurrence"]),
        ("cron(0 0 1W,15W * ? *)", &["W follows a single day of the month"]),
        ("cron(0 0 32W * ? *)", &["cron day-of-month field \"32W\": 32 is outside 1-31"]),
        ("cron(0 0 L-2 * ? *)", &["L must be the whole field"]),
        ("cron(0 0 ? * 2-5L *)", &["L follows a single day of the week"]),
        // Lists and steps.
        ("cron(*/0 * * * ? *)", &["step 0 after / must be between 1 and 60"]),
        ("cron(0/x * * * ? *)", &["step \"x\" after / is not a whole number"]),
        ("cron(0 0 1,,2 * ? *)", &["the list has an empty item"]),
        ("cron(0 0 1- * ? *)", &["a value is missing"]),
    ];

    #[test]
    fn malformed_expressions_are_refused_with_the_detail_at_fault() {
        assert!(MALFORMED.len() >= 25);
        for (text, needles) in MALFORMED {
            let error = match text.parse::<ScheduleExpression>() {
                Ok(parsed) => panic!("{text:?} should be refused, parsed as {parsed}"),
                Err(error) => error.to_string(),
            };
            for needle in *needles {
                assert!(
                    error.contains(needle),
                    "error for {text:?} is {error:?}; expected it to contain {needle:?}"
                );
            }
        }
    }

    #[test]
    fn field_errors_carry_the_field() {
        let error = "cron(0 0 ? * MON-FOO *)"
            .parse::<ScheduleExpression>()
            .unwrap_err();
        assert_eq!(
            error,
            ScheduleError::CronField {
                field: CronField::DayOfWeek,
                value: "MON-FOO".to_string(),
                reason: "FOO is not a day name (SUN-SAT) or number (1-7)".to_string(),
            }
        );
        assert_eq!(
            error.to_string(),
            "cron day-of-week field \"MON-FOO\": FOO is not a day name (SUN-SAT) or number (1-7)"
        );
    }

    #[test]
    fn display_gives_the_canonical_text() {
        for (input, canonical) in [
            ("cron(0 12 ? * mon-fri *)", "cron(0 12 ? * MON-FRI *)"),
            ("  cron( 0   10 * *  ?  * ) ", "cron(0 10 * * ? *)"),
            ("cron(0 0 lw jan,jul ? 2027)", "cron(0 0 LW JAN,JUL ? 2027)"),
            ("cron(0 8 ? * 3#2 *)", "cron(0 8 ? * 3#2 *)"),
            ("rate(1   day)", "rate(1 day)"),
            ("rate( 15 minutes )", "rate(15 minutes)"),
        ] {
            let parsed = parse(input);
            assert_eq!(parsed.to_string(), canonical, "{input}");
            // The canonical text parses back to the same expression.
            assert_eq!(parse(canonical), parsed, "{canonical}");
        }
    }

    #[test]
    fn names_and_numbers_mean_the_same_days() {
        let tz = TimeZone::UTC;
        let after = ts("2026-01-01T00:00:00Z");
        let anchor = after;
        for (named, numbered) in [
            ("cron(0 8 ? * SUN,SAT *)", "cron(0 8 ? * 1,7 *)"),
            ("cron(0 8 ? * TUE#2 *)", "cron(0 8 ? * 3#2 *)"),
            ("cron(0 8 ? * FRIL *)", "cron(0 8 ? * 6L *)"),
            ("cron(0 8 1 MAR-MAY ? *)", "cron(0 8 1 3-5 ? *)"),
        ] {
            let a: Vec<_> = parse(named).upcoming(after, &tz, anchor).take(6).collect();
            let b: Vec<_> = parse(numbered)
                .upcoming(after, &tz, anchor)
                .take(6)
                .collect();
            assert_eq!(a.len(), 6, "{named}");
            assert_eq!(a, b, "{named} vs {numbered}");
        }
    }

    #[test]
    fn time_zones_are_looked_up_by_iana_name() {
        for name in [
            "UTC",
            "America/New_York",
            "Europe/Berlin",
            "Asia/Kolkata",
            "Etc/UTC",
        ] {
            let tz = parse_time_zone(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(tz.iana_name(), Some(name));
        }
        for name in [
            "",
            "Mars/Olympus_Mons",
            "America/New York",
            " UTC",
            "+05:00",
        ] {
            let error = parse_time_zone(name).expect_err(name);
            assert_eq!(
                error.to_string(),
                format!(
                    "time zone {name:?} is not a known IANA time zone name (such as \
                     \"America/New_York\" or \"UTC\")"
                )
            );
        }
    }

    /// Whether a wall-clock minute matches, checked field by field on its own date (a
    /// different route from `next_local`'s search).
    fn matches(cron: &CronExpr, local: DateTime) -> bool {
        let year = local.year() as u16;
        let month = local.month() as u16;
        cron.years.contains(year)
            && cron.months.contains(month)
            && cron.hours.contains(local.hour() as u16)
            && cron.minutes.contains(local.minute() as u16)
            && cron
                .days_in(year, month)
                .is_some_and(|days| days.contains(local.day() as u16))
    }

    /// The search agrees with a minute-by-minute scan of real time (each instant's wall clock
    /// in the zone, a repeated wall-clock time counted at its first occurrence only) over
    /// weeks that include both DST changes.
    #[test]
    fn search_agrees_with_a_minute_by_minute_scan() {
        let expressions = [
            "cron(*/7 1-3 * * ? *)",
            "cron(0,30 * ? * 1#1 *)",
            "cron(0,30 * ? * MON,SUN *)",
            "cron(15 2 ? * 1L *)",
            "cron(45 0-4 LW * ? *)",
            "cron(0 1 1W * ? *)",
            "cron(* 1 * * ? *)",
            "cron(5/20 23,0,1,2 L * ? *)",
        ];
        let windows = [
            (
                "America/New_York",
                "2026-02-25T00:00:00Z",
                "2026-03-15T00:00:00Z",
            ),
            (
                "America/New_York",
                "2026-10-25T00:00:00Z",
                "2026-11-08T00:00:00Z",
            ),
            (
                "Europe/Berlin",
                "2026-03-22T00:00:00Z",
                "2026-04-02T00:00:00Z",
            ),
            (
                "Europe/Berlin",
                "2026-10-18T00:00:00Z",
                "2026-11-02T00:00:00Z",
            ),
            ("UTC", "2027-12-25T00:00:00Z", "2028-03-05T00:00:00Z"),
        ];
        let mut compared = 0;
        for text in expressions {
            let ScheduleExpression::Cron(cron) = parse(text) else {
                panic!("{text} is not a cron expression");
            };
            for (zone, from, to) in windows {
                let tz = parse_time_zone(zone).expect("zone");
                let (from, to) = (ts(from), ts(to));
                let mut expected = Vec::new();
                let mut t = from;
                while t < to {
                    t = t
                        .checked_add(SignedDuration::from_mins(1))
                        .expect("in range");
                    let local = tz.to_datetime(t);
                    let first = match tz.to_ambiguous_timestamp(local).offset() {
                        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(local).ok(),
                        _ => Some(t),
                    };
                    if first == Some(t) && matches(&cron, local) {
                        expected.push(t);
                    }
                }
                let mut found = Vec::new();
                let mut cursor = from;
                while let Some(next) = cron.next_after(cursor, &tz) {
                    if next > to {
                        break;
                    }
                    found.push(next);
                    cursor = next;
                }
                assert_eq!(found, expected, "{text} in {zone}");
                compared += expected.len();
            }
        }
        // The windows hold plenty of fires, the repeated and skipped hours included.
        assert!(compared > 1_000, "only {compared} fires compared");
    }

    #[test]
    fn impossible_schedules_have_no_next_fire() {
        // Searching field by field, 230 years of a never-matching expression take a few
        // thousand steps (a minute-by-minute scan would take 120 million, which the test's
        // time limit would show); how fast is for benchmarks, not this test.
        let tz = parse_time_zone("America/New_York").expect("zone");
        let after = ts("1970-01-01T00:00:00Z");
        for text in [
            "cron(0 0 30 2 ? *)",
            "cron(0 0 31 4,6,9,11 ? *)",
            "cron(0 0 ? 2 2#5 2026-2031)",
        ] {
            assert_eq!(parse(text).next_after(after, &tz, after), None, "{text}");
        }
    }
}
