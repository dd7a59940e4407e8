pub mod sbsys_double;
