package main

//go:generate go run . -out ../restic
