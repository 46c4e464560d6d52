//! SQL types the API takes that pgrx does not map out of the box: `regclass` and `name`.

use core::ffi::CStr;
use pgrx::callconv::{Arg, ArgAbi, BoxRet, FcInfo};
use pgrx::datum::Datum;
use pgrx::{pg_sys, FromDatum, IntoDatum};

/// A relation OID that PostgreSQL shows and parses as a (schema-qualified when needed) name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegClass(pub pg_sys::Oid);

impl FromDatum for RegClass {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        typoid: pg_sys::Oid,
    ) -> Option<Self> {
        unsafe { pg_sys::Oid::from_polymorphic_datum(datum, is_null, typoid) }.map(RegClass)
    }
}

impl IntoDatum for RegClass {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        self.0.into_datum()
    }
    fn type_oid() -> pg_sys::Oid {
        pg_sys::REGCLASSOID
    }
}

unsafe impl<'fcx> ArgAbi<'fcx> for RegClass {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        // Only reached for non-null arguments; the Option<RegClass> path handles NULL.
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or(RegClass(pg_sys::InvalidOid))
    }
}

unsafe impl BoxRet for RegClass {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut FcInfo<'fcx>) -> Datum<'fcx> {
        match self.into_datum() {
            Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
            None => fcinfo.return_null(),
        }
    }
}

pgrx::impl_sql_translatable!(RegClass, "regclass");

/// A value of SQL type `name` (an identifier as typed by the user, without quoting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(pub String);

impl FromDatum for Name {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        if is_null || datum.is_null() {
            return None;
        }
        // A name datum points at a NUL-terminated NameData buffer.
        let text = unsafe { CStr::from_ptr(datum.cast_mut_ptr::<core::ffi::c_char>()) };
        Some(Name(text.to_string_lossy().into_owned()))
    }
}

impl IntoDatum for Name {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(pg_sys::Datum::from(alloc_name(&self.0)))
    }
    fn type_oid() -> pg_sys::Oid {
        pg_sys::NAMEOID
    }
}

/// A palloc'd NameData holding `text`, cut to NAMEDATALEN - 1 bytes at a character boundary.
fn alloc_name(text: &str) -> *mut u8 {
    let limit = pg_sys::NAMEDATALEN as usize - 1;
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let bytes = &text.as_bytes()[..end];
    unsafe {
        let ptr = pg_sys::palloc0(pg_sys::NAMEDATALEN as usize).cast::<u8>();
        core::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len());
        ptr
    }
}

unsafe impl<'fcx> ArgAbi<'fcx> for Name {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or(Name(String::new()))
    }
}

unsafe impl BoxRet for Name {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut FcInfo<'fcx>) -> Datum<'fcx> {
        match self.into_datum() {
            Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
            None => fcinfo.return_null(),
        }
    }
}

pgrx::impl_sql_translatable!(Name, "name");
