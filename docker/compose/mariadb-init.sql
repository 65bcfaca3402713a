CREATE TABLE products (id int PRIMARY KEY AUTO_INCREMENT, name varchar(100) NOT NULL, price decimal(10,2));
INSERT INTO products (name, price) VALUES ('widget', 9.99), ('gadget', 19.50), ('gizmo', 4.25);
