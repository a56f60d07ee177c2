//! Methods with every kind of receiver, associated functions, trait methods
//! (in the impl and as the trait's default), and trait objects.
#![deny(warnings)]

use std::rc::Rc;

struct Counter {
    n: u32,
}

impl Counter {
    #[mpprof::instrument]
    fn new() -> Self {
        Self { n: 0 }
    }

    #[mpprof::instrument]
    fn get(&self) -> u32 {
        self.n
    }

    #[mpprof::instrument]
    fn bump(&mut self) -> &mut Self {
        self.n += 1;
        self
    }

    #[mpprof::instrument]
    fn into_inner(self) -> u32 {
        self.n
    }

    #[mpprof::instrument]
    fn into_inner_mut(mut self) -> u32 {
        self.n += 10;
        self.n
    }

    #[mpprof::instrument]
    fn boxed(self: Box<Self>) -> u32 {
        self.n
    }

    #[mpprof::instrument]
    fn rc(self: Rc<Self>) -> u32 {
        self.n
    }

    #[mpprof::instrument]
    pub(crate) fn explicit_ref<'a>(self: &'a Self) -> &'a u32 {
        &self.n
    }
}

trait Shape {
    fn area(&self) -> f64;

    #[mpprof::instrument]
    fn twice(&self) -> f64 {
        self.area() * 2.0
    }
}

struct Square(f64);

impl Shape for Square {
    #[mpprof::instrument]
    fn area(&self) -> f64 {
        self.0 * self.0
    }
}

fn main() {
    let mut c = Counter::new();
    c.bump().bump();
    assert_eq!(c.get(), 2);
    assert_eq!(*c.explicit_ref(), 2);
    assert_eq!(c.into_inner(), 2);
    assert_eq!(Counter::new().into_inner_mut(), 10);
    assert_eq!(Box::new(Counter::new()).boxed(), 0);
    assert_eq!(Rc::new(Counter::new()).rc(), 0);
    let shape: &dyn Shape = &Square(3.0);
    assert_eq!(shape.area(), 9.0);
    assert_eq!(shape.twice(), 18.0);
}
